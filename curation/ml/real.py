"""The models fitted once on a real dataset, each on its part of the train/curator/test split: the
reference classifier (the metrics' feature space) on train and curator, the simulated raters' model
(and the diversity guard's groups) on curator, and the held-out evaluation and its real floor on test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.ml.evaluation import Evaluation, real_floor
from curation.ml.raters import RaterModel
from curation.ml.reference import ReferenceClassifier
from training.data import NO_LABEL, DataSplit, split_dataset


@dataclass
class RealModels:
    split: DataSplit
    reference: ReferenceClassifier
    rater_model: RaterModel
    evaluation: Evaluation
    class_proportions: dict  # group (the rater model's class) -> share of the curator split
    real_floor: dict  # metric -> {"mean", "low", "high"}, with "sample_size" and "repeats" (evaluation.real_floor)


def fit_real_models(images: np.ndarray, labels: np.ndarray, *, split_seed: int = 0) -> RealModels:
    split = split_dataset(labels, seed=split_seed)
    seen = np.concatenate([split.train, split.curator])  # never the test split
    seen.sort()
    reference = ReferenceClassifier.fit(images[seen], labels[seen], seed=0)
    curator_images = images[split.curator]
    labelled = not np.any(labels == NO_LABEL)
    # Without labels, the groups are the reference's clusters, as the rater model learns them.
    rater_model = RaterModel.fit(
        curator_images, labels[split.curator] if labelled else reference.predict(curator_images), seed=0
    )
    groups = labels[split.curator] if labelled else rater_model.predict(curator_images)
    evaluation = Evaluation.fit(reference, images[split.test], images[split.train], seed=split_seed)
    values, counts = np.unique(groups, return_counts=True)
    return RealModels(
        split=split,
        reference=reference,
        rater_model=rater_model,
        evaluation=evaluation,
        class_proportions={int(v): float(c) / len(groups) for v, c in zip(values, counts)},
        real_floor=real_floor(evaluation),
    )
