"""The frozen reference classifier: a model of the real data whose hidden layer is the feature space
for metrics (Fréchet distance, precision/recall) and whose predicted class groups samples.

The MAD paper measures MNIST loops in the feature space of a classifier trained on the real data;
this is the same idea at digits' scale: a one-hidden-layer MLP on the pixels, trained once, seeded.
Data without labels gets pseudo-labels from k-means clusters, so groups and features still exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.neural_network import MLPClassifier

from training.data import NO_LABEL

HIDDEN_UNITS = 128
UNLABELLED_CLUSTERS = 10


@dataclass
class ReferenceClassifier:
    classifier: MLPClassifier
    classes: np.ndarray

    @classmethod
    def fit(cls, images: np.ndarray, labels: np.ndarray, seed: int = 0) -> "ReferenceClassifier":
        pixels = flatten(images)
        if np.any(labels == NO_LABEL):
            clusters = min(UNLABELLED_CLUSTERS, len(pixels))
            labels = KMeans(n_clusters=clusters, n_init=4, random_state=seed).fit_predict(pixels)
        classifier = MLPClassifier(
            hidden_layer_sizes=(HIDDEN_UNITS,), alpha=1e-3, max_iter=600, random_state=seed
        ).fit(pixels, labels)
        return cls(classifier=classifier, classes=classifier.classes_)

    def features(self, images: np.ndarray) -> np.ndarray:
        """The hidden-layer activations (ReLU), the space the metrics are computed in."""
        hidden = flatten(images) @ self.classifier.coefs_[0] + self.classifier.intercepts_[0]
        return np.maximum(hidden, 0.0)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.classifier.predict(flatten(images))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self.classifier.predict_proba(flatten(images))


def flatten(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float64).reshape(len(images), -1)
