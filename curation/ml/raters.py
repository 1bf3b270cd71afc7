"""Simulated raters: a model of a human voter, for headless runs, tests and benchmarks.

A rater votes up when a classifier trained on the real data is confident the sample is one of the
real classes (its maximum class probability, shifted by the rater's bias, reaches the threshold),
and flips that vote with probability `noise`. The classifier (an RBF SVM on the pixels) is
deliberately not the reference MLP the metrics use, so curation by simulated votes is not graded in
the very feature space it was selected in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.svm import SVC

from curation.ml.reference import flatten


@dataclass(frozen=True)
class SimulatedRaterConfig:
    threshold: float = 0.8
    noise: float = 0.1
    bias: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"a rater's threshold must be within [0, 1], not {self.threshold}")
        if not 0.0 <= self.noise <= 0.5:
            raise ValueError(f"a rater's noise must be within [0, 0.5], not {self.noise}")


@dataclass
class RaterModel:
    classifier: CalibratedClassifierCV

    @classmethod
    def fit(cls, images: np.ndarray, labels: np.ndarray, seed: int = 0) -> "RaterModel":
        # Platt-calibrated probabilities, as SVC(probability=True) gave before scikit-learn 1.9.
        calibrated = CalibratedClassifierCV(SVC(random_state=seed), method="sigmoid", ensemble=False)
        return cls(calibrated.fit(flatten(images), labels))

    def confidence(self, images: np.ndarray) -> np.ndarray:
        """How sure the model is that each image is a clean instance of some real class."""
        return self.classifier.predict_proba(flatten(images)).max(axis=1)


def simulated_votes(confidence: np.ndarray, sample_keys: np.ndarray, rater: SimulatedRaterConfig) -> np.ndarray:
    """Up (True) or down for each sample; the noise draw is seeded by the rater and the sample key,
    so a rater asked again about the same sample gives the same answer."""
    up = confidence + rater.bias >= rater.threshold
    flips = np.array(
        [np.random.default_rng((rater.seed, int(key))).random() < rater.noise for key in sample_keys], dtype=bool
    )
    return up ^ flips
