"""Metrics on known distributions: identical sets score perfectly, shifted or collapsed sets worse."""

import numpy as np
import pytest

from curation.ml.metrics import (
    class_histogram,
    classes_covered,
    frechet_distance,
    precision_recall_density_coverage,
    real_floor_frechet_distance,
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


def test_the_real_floor_is_small_but_above_zero(digits, reference):
    floor = real_floor_frechet_distance(reference.features(digits.images))
    assert 0.0 < floor < 1.0


def test_the_class_histogram_counts_every_class_and_covered_means_above_two_percent():
    histogram = class_histogram(np.array([0] * 97 + [1] * 3), np.arange(3))
    assert histogram == {"0": 0.97, "1": 0.03, "2": 0.0}
    assert classes_covered(histogram) == 2


def test_unlabelled_data_gets_cluster_groups(digits):
    unlabelled = np.full(300, NO_LABEL)
    reference = ReferenceClassifier.fit(digits.images[:300], unlabelled)
    assert len(reference.classes) == 10
    assert reference.features(digits.images[:5]).shape == (5, 128)
