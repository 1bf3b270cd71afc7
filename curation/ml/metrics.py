"""Per-generation metrics of generated samples against the real data, in a reference feature space.

- Fréchet distance between Gaussians fitted to the two feature sets (Heusel et al. 2017).
- Precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020) over k-NN
  manifolds with k=5, as in the MAD paper, computed by the `prdc` package.
- The class histogram of the samples and how many classes hold more than 2% of them.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from prdc import compute_prdc

NEAREST_K = 5
CLASS_PRESENT_FRACTION = 0.02


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    mu_a, mu_b = features_a.mean(axis=0), features_b.mean(axis=0)
    sigma_a = np.cov(features_a, rowvar=False)
    sigma_b = np.cov(features_b, rowvar=False)
    # tr(sqrt(A B)) is the sum of the square roots of the eigenvalues of A B, which are real and
    # non-negative for covariance matrices; this stays exact where sqrtm warns on the singular
    # covariances that dead ReLU units produce.
    eigenvalues = np.linalg.eigvals(sigma_a @ sigma_b).real
    trace_covmean = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    diff = mu_a - mu_b
    distance = diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * trace_covmean
    return max(0.0, float(distance))  # rounding can leave identical sets a hair below zero


def precision_recall_density_coverage(real_features: np.ndarray, fake_features: np.ndarray) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        values = compute_prdc(real_features=real_features, fake_features=fake_features, nearest_k=NEAREST_K)
    return {name: float(value) for name, value in values.items()}


def class_histogram(predicted: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    """Fraction of samples per class, every class present as a key."""
    total = max(1, len(predicted))
    return {str(c): float(np.sum(predicted == c)) / total for c in classes}


def classes_covered(histogram: dict[str, float]) -> int:
    return sum(1 for fraction in histogram.values() if fraction > CLASS_PRESENT_FRACTION)


def real_floor_frechet_distance(real_features: np.ndarray, seed: int = 0) -> float:
    """FD between two disjoint random halves of the real data: the best a generator can hope for
    at this sample size."""
    order = np.random.default_rng(seed).permutation(len(real_features))
    half = len(order) // 2
    return frechet_distance(real_features[order[:half]], real_features[order[half:]])


def sample_metrics(reference, real_features: np.ndarray, samples: np.ndarray) -> dict:
    """Every model-quality metric of `samples` against the real data."""
    fake_features = reference.features(samples)
    histogram = class_histogram(reference.predict(samples), reference.classes)
    return {
        "fd": frechet_distance(real_features, fake_features),
        **precision_recall_density_coverage(real_features, fake_features),
        "class_histogram": histogram,
        "classes_covered": classes_covered(histogram),
        "metric_samples": int(len(samples)),
    }
