"""Per-generation metrics of generated samples against the real data, in a reference feature space.

- Fréchet distance between Gaussians fitted to the two feature sets (Heusel et al. 2017).
- Kernel distance: the unbiased squared MMD with a cubic polynomial kernel (KID, Bińkowski et al. 2018).
- Precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020) over k-NN
  manifolds with k=5, as in the MAD paper, computed as the `prdc` package does.
- The class histogram of the samples and how many classes hold more than 2% of them.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

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


def kernel_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The unbiased estimate of MMD^2 with k(x, y) = (x.y / d + 1)^3, d the feature dimension, as KID
    (Bińkowski et al. 2018) on one pair of sets. Unbiased, it can fall a little below zero."""
    dimension = features_a.shape[1]
    within_a = (features_a @ features_a.T / dimension + 1.0) ** 3
    within_b = (features_b @ features_b.T / dimension + 1.0) ** 3
    across = (features_a @ features_b.T / dimension + 1.0) ** 3
    m, n = len(features_a), len(features_b)
    # Each set's mean kernel value over pairs of distinct members: the diagonal k(x, x) is left out.
    mean_a = (within_a.sum() - np.trace(within_a)) / (m * (m - 1))
    mean_b = (within_b.sum() - np.trace(within_b)) / (n * (n - 1))
    return float(mean_a + mean_b - 2.0 * across.mean())


def precision_recall_density_coverage(real_features: np.ndarray, fake_features: np.ndarray) -> dict:
    """As the `prdc` package computes them (Naeem et al. 2020's reference code), in plain numpy: each
    real point's k-NN radius among the real points (itself excluded), and so for the fakes.
    (`prdc` spreads its distance computations over 8 processes: ten times slower on two cores.)"""
    real_radii = _kth_neighbour_distance(cdist(real_features, real_features), NEAREST_K)
    fake_radii = _kth_neighbour_distance(cdist(fake_features, fake_features), NEAREST_K)
    across = cdist(real_features, fake_features)  # (real, fake)
    within_real = across < real_radii[:, None]
    return {
        "precision": float(within_real.any(axis=0).mean()),
        "recall": float((across < fake_radii[None, :]).any(axis=1).mean()),
        "density": float(within_real.sum(axis=0).mean() / NEAREST_K),
        "coverage": float((across.min(axis=1) < real_radii).mean()),
    }


def _kth_neighbour_distance(distances: np.ndarray, k: int) -> np.ndarray:
    """Each row's distance to its k-th nearest other point (the row's zero distance to itself is the 0th)."""
    return np.partition(distances, k, axis=1)[:, k]


def class_histogram(predicted: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    """Fraction of samples per class, every class present as a key."""
    total = max(1, len(predicted))
    return {str(c): float(np.sum(predicted == c)) / total for c in classes}


def classes_covered(histogram: dict[str, float]) -> int:
    return sum(1 for fraction in histogram.values() if fraction > CLASS_PRESENT_FRACTION)


def sample_metrics(reference, real_features: np.ndarray, samples: np.ndarray) -> dict:
    """Every model-quality metric of `samples` against `real_features`, at whatever sizes they come.
    (The loop measures on the held-out split at matched sizes: curation.ml.evaluation.)"""
    fake_features = reference.features(samples)
    histogram = class_histogram(reference.predict(samples), reference.classes)
    return {
        "fd": frechet_distance(real_features, fake_features),
        **precision_recall_density_coverage(real_features, fake_features),
        "class_histogram": histogram,
        "classes_covered": classes_covered(histogram),
        "metric_samples": int(len(samples)),
    }
