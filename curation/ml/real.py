"""The models fitted once on a real dataset: the reference classifier (the metrics' feature space and
the groups the diversity guard balances), the simulated raters' classifier, and the real floor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.ml.metrics import real_floor_frechet_distance
from curation.ml.raters import RaterModel
from curation.ml.reference import ReferenceClassifier
from training.data import NO_LABEL


@dataclass
class RealModels:
    reference: ReferenceClassifier
    rater_model: RaterModel
    real_features: np.ndarray
    class_proportions: dict
    real_floor: dict


def fit_real_models(images: np.ndarray, labels: np.ndarray) -> RealModels:
    reference = ReferenceClassifier.fit(images, labels, seed=0)
    groups = reference.predict(images) if np.any(labels == NO_LABEL) else labels
    rater_model = RaterModel.fit(images, groups, seed=0)
    real_features = reference.features(images)
    values, counts = np.unique(groups, return_counts=True)
    return RealModels(
        reference=reference,
        rater_model=rater_model,
        real_features=real_features,
        class_proportions={int(v): float(c) / len(groups) for v, c in zip(values, counts)},
        real_floor={"fd": real_floor_frechet_distance(real_features), "samples_per_half": len(groups) // 2},
    )
