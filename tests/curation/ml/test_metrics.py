"""Metrics on known distributions: identical sets score perfectly, shifted or collapsed sets worse."""

import numpy as np
import pytest

from curation.ml.metrics import (
    class_histogram,
    classes_covered,
    frechet_distance,
    kernel_distance,
    precision_recall_density_coverage,
    sample_metrics,
)
from curation.ml.reference import ReferenceClassifier
from training.data import NO_LABEL, load_digits_dataset


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


@pytest.fixture(scope="module")
def reference(digits):
    return ReferenceClassifier.fit(digits.images, digits.labels)


def test_identical_gaussians_have_zero_frechet_distance_and_shifted_ones_the_squared_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    shifted = a + np.array([3.0] + [0.0] * 7)
    assert frechet_distance(a, shifted) == pytest.approx(9.0, rel=1e-6)


def test_identical_sets_have_precision_and_recall_of_one():
    features = np.random.default_rng(1).normal(size=(500, 16))
    values = precision_recall_density_coverage(features, features)
    assert values["precision"] == pytest.approx(1.0) and values["recall"] == pytest.approx(1.0)
    assert values["coverage"] == pytest.approx(1.0)


def test_real_digits_score_near_perfect_and_a_collapsed_set_scores_worse(digits, reference):
    real_features = reference.features(digits.images)
    rng = np.random.default_rng(2)
    real_subset = digits.images[rng.permutation(len(digits))[:1000]]
    healthy = sample_metrics(reference, real_features, real_subset)
    assert healthy["fd"] < 0.5 and healthy["precision"] > 0.95 and healthy["recall"] > 0.9
    assert healthy["classes_covered"] == 10

    # Mode collapse: only 3s and 8s, drawn with repetition.
    collapsed_pool = digits.images[np.isin(digits.labels, [3, 8])]
    collapsed = collapsed_pool[rng.integers(0, len(collapsed_pool), 1000)]
    bad = sample_metrics(reference, real_features, collapsed)
    assert bad["fd"] > 5 * healthy["fd"]
    assert bad["recall"] < healthy["recall"] - 0.3
    assert bad["coverage"] < healthy["coverage"] - 0.3
    assert bad["classes_covered"] == 2


def test_blur_raises_frechet_distance_and_lowers_precision(digits, reference):
    real_features = reference.features(digits.images)
    images = digits.images[:1000]
    blurred = (images + np.roll(images, 1, axis=3) + np.roll(images, -1, axis=3)) / 3
    sharp = sample_metrics(reference, real_features, images)
    soft = sample_metrics(reference, real_features, blurred)
    assert soft["fd"] > sharp["fd"] + 1.0
    assert soft["precision"] < sharp["precision"]


def test_the_kernel_distance_is_the_unbiased_mmd_with_the_cubic_kernel_worked_by_hand():
    # d = 2, k(x, y) = (x.y / 2 + 1)^3. Within {(2,0), (2,0)}: k = (4/2 + 1)^3 = 27 (the pair of
    # distinct members; k(x, x) is left out). Within {(0,0), (0,0)}: 1. Across: 1. 27 + 1 - 2 = 26.
    assert kernel_distance(np.array([[2.0, 0.0], [2.0, 0.0]]), np.zeros((2, 2))) == pytest.approx(26.0)
    # Within {(1,0), (0,1)}: 1; within {(1,1), (0,0)}: 1; across: (1.5^3 + 1 + 1.5^3 + 1) / 4 = 2.1875.
    # 1 + 1 - 2 * 2.1875 = -2.375: unbiased, it can go below zero.
    a, b = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 1.0], [0.0, 0.0]])
    assert kernel_distance(a, b) == pytest.approx(-2.375)
    assert kernel_distance(b, a) == pytest.approx(-2.375)


def test_the_kernel_distance_is_near_zero_for_one_distribution_and_large_for_a_shifted_one():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    assert abs(kernel_distance(a, b)) < 0.05
    assert kernel_distance(a, b + 2.0) > 1.0


def test_the_class_histogram_counts_every_class_and_covered_means_above_two_percent():
    histogram = class_histogram(np.array([0] * 97 + [1] * 3), np.arange(3))
    assert histogram == {"0": 0.97, "1": 0.03, "2": 0.0}
    assert classes_covered(histogram) == 2


def test_unlabelled_data_gets_cluster_groups(digits):
    unlabelled = np.full(300, NO_LABEL)
    reference = ReferenceClassifier.fit(digits.images[:300], unlabelled)
    assert len(reference.classes) == 10
    assert reference.features(digits.images[:5]).shape == (5, 128)


def test_precision_recall_density_coverage_match_the_reference_implementation():
    import contextlib
    import io

    from prdc import compute_prdc

    from curation.ml.metrics import precision_recall_density_coverage

    rng = np.random.default_rng(3)
    for real_count, fake_count, shift in ((120, 120, 0.0), (90, 150, 0.3), (40, 25, 1.0)):
        real = np.maximum(rng.standard_normal((real_count, 32)), 0)
        fake = np.maximum(rng.standard_normal((fake_count, 32)) + shift, 0)
        with contextlib.redirect_stdout(io.StringIO()):
            expected = compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
        got = precision_recall_density_coverage(real, fake)
        assert got == pytest.approx({name: float(value) for name, value in expected.items()}, abs=1e-12)
