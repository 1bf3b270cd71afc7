"""The discriminator: P(accept | image) learnt from raters' votes, validated on held-out votes.

Features are the raw pixels plus five image statistics. At 8x8 the pixels are the shape itself,
which a linear model on them separates well (digits are ~96% linearly separable); the statistics
name the artefacts that compound when a loop feeds on itself and that raters reject: faint or
blotchy strokes (ink mass, contrast), haze and blur (the share of mid-tone pixels), speckle (total
variation) and ink off the centre (ink on the border ring). The model is a standardised
logistic regression: few votes per generation (hundreds) and calibrated probabilities matter more
than capacity, and it cannot memorise the most typical samples the way a deep model can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from curation.ml.reference import flatten

HELD_OUT_FRACTION = 0.25
FEATURE_NAMES = ("ink_mass", "contrast", "mid_tone_share", "total_variation", "border_ink")


def image_features(images: np.ndarray) -> np.ndarray:
    pixels = flatten(images)
    grey = np.asarray(images, dtype=np.float64).mean(axis=1)  # (N, H, W)
    border = np.ones(grey.shape[1:], dtype=bool)
    border[1:-1, 1:-1] = False
    stats = np.column_stack(
        [
            pixels.mean(axis=1),
            pixels.std(axis=1),
            ((pixels > 0.2) & (pixels < 0.8)).mean(axis=1),
            np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2)),
            grey[:, border].mean(axis=1),
        ]
    )
    return np.hstack([pixels, stats])


@dataclass
class DiscriminatorFit:
    model: Pipeline | DummyClassifier
    accuracy: Optional[float]
    auc: Optional[float]
    train_count: int
    held_out_count: int
    positive_rate: float
    note: str

    def score(self, features: np.ndarray) -> np.ndarray:
        """P(accept) for each row of features."""
        probabilities = self.model.predict_proba(features)
        positive = list(self.model.classes_).index(True) if True in self.model.classes_ else None
        if positive is None:
            return np.zeros(len(features))
        return probabilities[:, positive]


def fit_discriminator(features: np.ndarray, accepted: np.ndarray, seed: int = 0, c: float = 0.5) -> DiscriminatorFit:
    """Fit on (features, accepted) labels from aggregated votes; report accuracy and AUC on a
    stratified held-out split, then refit on every vote for scoring."""
    accepted = np.asarray(accepted, dtype=bool)
    if len(accepted) == 0:
        raise ValueError("the discriminator needs at least one voted sample")
    positive_rate = float(accepted.mean())
    if accepted.all() or not accepted.any():
        # Every vote agrees: there is no boundary to learn. Score every sample with the unanimous
        # verdict and say so, instead of pretending to validate.
        model = DummyClassifier(strategy="most_frequent").fit(features, accepted)
        verdict = "up" if accepted.all() else "down"
        return DiscriminatorFit(model, None, None, len(accepted), 0, positive_rate, f"all {len(accepted)} votes were {verdict}")

    def build() -> Pipeline:
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))

    accuracy = auc = None
    held_out = 0
    minority = int(min(accepted.sum(), (~accepted).sum()))
    note = ""
    if minority >= 2 and len(accepted) >= 8:
        x_train, x_test, y_train, y_test = train_test_split(
            features, accepted, test_size=HELD_OUT_FRACTION, stratify=accepted, random_state=seed
        )
        validation_model = build().fit(x_train, y_train)
        accuracy = float(accuracy_score(y_test, validation_model.predict(x_test)))
        if len(np.unique(y_test)) == 2:  # AUC is undefined when the held-out votes all agree
            auc = float(roc_auc_score(y_test, validation_model.predict_proba(x_test)[:, 1]))
        held_out = len(y_test)
    else:
        note = "too few votes of one kind to hold any out"
    model = build().fit(features, accepted)
    return DiscriminatorFit(model, accuracy, auc, len(accepted) - held_out, held_out, positive_rate, note)
