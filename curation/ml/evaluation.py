"""Held-out evaluation: a generation's samples against the test split, which no model is fitted on and
the loop never trains on, at the sample size of the real-vs-real floor they are read against.

With m = len(test) // 2, every distribution metric compares m samples with m test images (a seeded
half A_r, averaged over several such halves), and the floor compares m test images with m others:
metrics whose value depends on the sample size (the Fréchet distance above all) are read at one size.
Memorization counts samples nearer in pixels to a training image than all but 5% of test images are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.ml.metrics import (
    class_histogram,
    classes_covered,
    frechet_distance,
    kernel_distance,
    precision_recall_density_coverage,
)
from curation.ml.reference import ReferenceClassifier, flatten

DISTRIBUTION_METRICS = ("fd", "kid", "precision", "recall", "density", "coverage")
# A sample is a copy of a training image when it lies nearer to one than 95% of held-out real images
# lie to theirs: a perfect generator, drawing fresh images, is flagged 5% of the time.
MEMORIZATION_PERCENTILE = 5.0
FLOOR_INTERVAL = (2.5, 97.5)
# Keys that separate the seeded draws derived from the evaluation's seed.
SUBSET_KEY, FLOOR_KEY, CHANCE_KEY = 1, 2, 3
CHANCE_DRAWS = 10  # random subsets a choice of samples is compared with
CHANCE_MINIMUM = 30  # fewer chosen samples are not compared with chance (too few for stable FD and recall)
DISTANCE_BLOCK = 1024  # rows per block of pixel distances: memory stays bounded for large sets


@dataclass
class Evaluation:
    reference: ReferenceClassifier
    test_features: np.ndarray
    reference_halves: np.ndarray  # (references, m) indices into the test split: A_r
    other_halves: np.ndarray  # (references, m) indices of the test images outside A_r: B_r
    train_pixels: np.ndarray  # the images the loop trains on, flattened
    test_nearest_train: np.ndarray  # each test image's pixel distance to its nearest training image
    memorization_threshold: float  # tau: the 5th percentile of test_nearest_train
    floor_repeats: int
    seed: int

    @property
    def sample_size(self) -> int:
        return self.reference_halves.shape[1]

    @classmethod
    def fit(
        cls,
        reference: ReferenceClassifier,
        test_images: np.ndarray,
        train_images: np.ndarray,
        *,
        references: int = 10,
        floor_repeats: int = 100,
        seed: int = 0,
    ) -> "Evaluation":
        half = len(test_images) // 2
        if half <= 5:  # precision/recall's k=5 neighbours need more than 5 points per set
            raise ValueError(f"held-out evaluation needs at least 12 test images, not {len(test_images)}")
        if references < 1 or floor_repeats < 1:
            raise ValueError("references and floor_repeats must each be at least 1")
        rng = np.random.default_rng(seed)
        orders = np.stack([rng.permutation(len(test_images)) for _ in range(references)])
        train_pixels = flatten(train_images)
        nearest = nearest_distance(flatten(test_images), train_pixels)
        return cls(
            reference=reference,
            test_features=reference.features(test_images),
            reference_halves=np.sort(orders[:, :half], axis=1),
            other_halves=np.sort(orders[:, half : 2 * half], axis=1),
            train_pixels=train_pixels,
            test_nearest_train=nearest,
            memorization_threshold=float(np.percentile(nearest, MEMORIZATION_PERCENTILE)),
            floor_repeats=floor_repeats,
            seed=seed,
        )


def evaluate(evaluation: Evaluation, samples: np.ndarray, training_images: np.ndarray | None = None) -> dict:
    """Every metric of `samples` against the test split, at the floor's sample size m: the mean over
    the reference halves A_r of the metrics of a seeded m-subset of the samples against A_r.
    Memorization is measured on all samples, against `training_images` (default: the train split)."""
    size = evaluation.sample_size
    if len(samples) < size:
        raise ValueError(
            f"held-out metrics compare {size} samples with {size} test images: "
            f"{len(samples)} samples are too few, {size} are needed"
        )
    features = evaluation.reference.features(samples)
    held_out = _held_out(evaluation, features, size, np.random.default_rng((evaluation.seed, SUBSET_KEY)))
    train_pixels = evaluation.train_pixels if training_images is None else flatten(training_images)
    nearest = nearest_distance(flatten(samples), train_pixels)
    histogram = class_histogram(evaluation.reference.predict(samples), evaluation.reference.classes)
    return {
        **held_out,
        "memorization": float(np.mean(nearest < evaluation.memorization_threshold)),
        "class_histogram": histogram,
        "classes_covered": classes_covered(histogram),
        "metric_samples": size,
        "reference_halves": len(evaluation.reference_halves),
    }


def _held_out(evaluation: Evaluation, features: np.ndarray, size: int, rng) -> dict[str, float]:
    """Every distribution metric of a seeded `size`-subset of `features` against each reference half
    (itself a seeded `size`-subset of it when `size` is below m), averaged over the halves."""
    per_half = []
    for half in evaluation.reference_halves:
        real = half if size == len(half) else rng.choice(half, size, replace=False)
        per_half.append(matched_metrics(features[rng.choice(len(features), size, replace=False)],
                                        evaluation.test_features[real]))
    return {name: float(np.mean([values[name] for values in per_half])) for name in DISTRIBUTION_METRICS}


def choice_versus_chance(evaluation: Evaluation, samples: np.ndarray, chosen: np.ndarray, *, seed: int = 0,
                         draws: int = CHANCE_DRAWS) -> dict:
    """Did a choice of samples (curation's accepted ones) do better than chance? Held-out FD and recall
    of the chosen samples, and the mean of the same over `draws` random subsets of as many of the same
    samples, measured alike: subsets of min(chosen, m) against as many images of each reference half.
    Empty when fewer than CHANCE_MINIMUM were chosen, or all of them were (nothing was chosen)."""
    chosen = np.asarray(chosen, dtype=bool)
    count = int(chosen.sum())
    if count < CHANCE_MINIMUM or count == len(samples):
        return {}
    size = min(count, evaluation.sample_size)
    features = evaluation.reference.features(samples)
    rng = np.random.default_rng((evaluation.seed, CHANCE_KEY, seed))
    mine = _held_out(evaluation, features[chosen], size, rng)
    chance = [_held_out(evaluation, features[rng.choice(len(samples), count, replace=False)], size, rng)
              for _ in range(draws)]
    return {
        "chosen_fd": mine["fd"], "chosen_recall": mine["recall"],
        "chance_fd": float(np.mean([c["fd"] for c in chance])),
        "chance_recall": float(np.mean([c["recall"] for c in chance])),
        "chance_draws": draws, "chance_size": size,
    }


def real_floor(evaluation: Evaluation) -> dict:
    """The best a perfect generator could score at this sample size, with its spread: over seeded
    random splits of the test set into two halves of m, each metric of one half (as if it were the
    samples) against the other. Per metric {"mean", "low", "high"}, low and high the 2.5th and 97.5th
    percentiles; memorization is the held-out half's against the training images (about 0.05)."""
    size = evaluation.sample_size
    rng = np.random.default_rng((evaluation.seed, FLOOR_KEY))
    rows = []
    for _ in range(evaluation.floor_repeats):
        order = rng.permutation(len(evaluation.test_features))
        real, held_out = order[:size], order[size : 2 * size]
        values = matched_metrics(evaluation.test_features[held_out], evaluation.test_features[real])
        values["memorization"] = float(np.mean(evaluation.test_nearest_train[held_out] < evaluation.memorization_threshold))
        rows.append(values)
    floor = {name: _spread([row[name] for row in rows]) for name in (*DISTRIBUTION_METRICS, "memorization")}
    return {**floor, "sample_size": size, "repeats": evaluation.floor_repeats}


def matched_metrics(sample_features: np.ndarray, real_features: np.ndarray) -> dict[str, float]:
    """The distribution metrics of one set of sample features against one set of real features."""
    return {
        "fd": frechet_distance(real_features, sample_features),
        "kid": kernel_distance(real_features, sample_features),
        **precision_recall_density_coverage(real_features, sample_features),
    }


def nearest_distance(pixels: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Each row's Euclidean distance to its nearest row of `references` (both flattened images)."""
    reference_norms = np.einsum("ij,ij->i", references, references)
    nearest = np.empty(len(pixels))
    for start in range(0, len(pixels), DISTANCE_BLOCK):
        block = pixels[start : start + DISTANCE_BLOCK]
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, clipped: rounding can leave a copy's distance a hair below 0.
        squared = np.einsum("ij,ij->i", block, block)[:, None] + reference_norms[None, :] - 2.0 * block @ references.T
        nearest[start : start + DISTANCE_BLOCK] = np.sqrt(np.clip(squared.min(axis=1), 0.0, None))
    return nearest


def _spread(values: list[float]) -> dict[str, float]:
    low, high = np.percentile(values, FLOOR_INTERVAL)
    return {"mean": float(np.mean(values)), "low": float(low), "high": float(high)}
