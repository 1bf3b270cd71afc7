"""Held-out evaluation on digits: no model sees the test split, samples are measured against it at the
floor's sample size, and the floor says what real images score there."""

import numpy as np
import pytest

from curation.ml import real
from curation.ml.evaluation import (
    CHANCE_MINIMUM, DISTRIBUTION_METRICS, Evaluation, choice_versus_chance, evaluate, matched_metrics,
)
from curation.ml.model_files import dump_model, load_model
from curation.ml.raters import RaterModel
from curation.ml.reference import ReferenceClassifier
from training.data import NO_LABEL, load_digits_dataset


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


@pytest.fixture(scope="module")
def fitted(digits):
    """The real models of digits, fitted once, with the images each model was fitted on recorded."""
    seen = {}

    def recording(name, original):
        def fit(images, labels, *args, **kwargs):
            seen[name] = images
            return original(images, labels, *args, **kwargs)
        return fit

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ReferenceClassifier, "fit", recording("reference", ReferenceClassifier.fit))
        patch.setattr(RaterModel, "fit", recording("rater", RaterModel.fit))
        models = real.fit_real_models(digits.images, digits.labels)
    return models, seen


@pytest.fixture(scope="module")
def models(fitted):
    return fitted[0]


def rows(images) -> set[bytes]:
    return {image.tobytes() for image in np.asarray(images)}


def test_the_reference_is_fitted_on_train_and_curator_and_the_raters_on_curator_never_on_test(digits, fitted):
    models, seen = fitted
    split = models.split
    assert np.array_equal(seen["reference"], digits.images[np.union1d(split.train, split.curator)])
    assert np.array_equal(seen["rater"], digits.images[split.curator])
    test_rows = rows(digits.images[split.test])
    assert not rows(seen["reference"]) & test_rows and not rows(seen["rater"]) & test_rows


def test_the_evaluation_measures_against_the_test_split_in_matched_halves(digits, models):
    evaluation, split = models.evaluation, models.split
    half = len(split.test) // 2
    assert evaluation.sample_size == half and evaluation.reference_halves.shape == (10, half)
    assert np.allclose(evaluation.test_features, models.reference.features(digits.images[split.test]))
    for reference_half, other_half in zip(evaluation.reference_halves, evaluation.other_halves):
        assert len(np.intersect1d(reference_half, other_half)) == 0
    assert len({tuple(h) for h in evaluation.reference_halves}) == 10


def test_the_floor_gives_every_metric_a_mean_and_an_interval_at_the_matched_size(models):
    floor = models.real_floor
    assert floor["sample_size"] == models.evaluation.sample_size and floor["repeats"] == 100
    for name in (*DISTRIBUTION_METRICS, "memorization"):
        assert floor[name]["low"] <= floor[name]["mean"] <= floor[name]["high"], name
    assert 0.0 < floor["fd"]["low"] < floor["fd"]["high"] < 3.0
    # Held-out real images count as copies 5% of the time by construction (less where distances tie).
    assert 0.02 <= floor["memorization"]["mean"] <= 0.06


def test_fresh_real_images_score_within_the_floor_interval(digits, models):
    # The curator split: real digits the evaluation never saw and the loop never trains on.
    scores = evaluate(models.evaluation, digits.images[models.split.curator])
    for name in (*DISTRIBUTION_METRICS, "memorization"):
        floor = models.real_floor[name]
        assert floor["low"] <= scores[name] <= floor["high"], (name, scores[name], floor)
    assert scores["classes_covered"] == 10
    assert scores["metric_samples"] == models.evaluation.sample_size and scores["reference_halves"] == 10
    evaluation = models.evaluation
    halves = matched_metrics(evaluation.test_features[evaluation.other_halves[0]],
                             evaluation.test_features[evaluation.reference_halves[0]])
    for name in DISTRIBUTION_METRICS:
        assert models.real_floor[name]["low"] <= halves[name] <= models.real_floor[name]["high"], name


def test_a_generator_that_returns_its_training_images_scores_memorization_near_one(digits, models):
    copies = evaluate(models.evaluation, digits.images[models.split.train])
    assert copies["memorization"] > 0.95
    assert copies["memorization"] > 10 * models.real_floor["memorization"]["high"]


def test_memorization_is_measured_against_the_training_images_given(digits, models):
    curator = digits.images[models.split.curator]
    assert evaluate(models.evaluation, curator, training_images=curator)["memorization"] == 1.0


def test_noise_images_score_far_outside_the_floor(models):
    size = models.evaluation.sample_size
    noise = np.random.default_rng(0).random((size, 1, 8, 8)).astype(np.float32)
    scores = evaluate(models.evaluation, noise)
    floor = models.real_floor
    assert scores["fd"] > 10 * floor["fd"]["high"]
    assert scores["kid"] > 10 * floor["kid"]["high"]
    assert scores["precision"] < floor["precision"]["low"] - 0.5
    assert scores["memorization"] == 0.0


def test_choosing_varied_digits_out_of_varied_and_collapsed_ones_beats_chance_and_the_reverse_loses(digits, models):
    real_images = digits.images[models.split.curator]
    labels = digits.labels[models.split.curator]
    # A collapsed generator: ones only, the same few drawn again and again.
    ones = real_images[labels == 1][:5]
    collapsed = ones[np.random.default_rng(1).integers(0, len(ones), len(real_images))]
    pool = np.concatenate([real_images, collapsed])
    real_chosen = np.arange(len(pool)) < len(real_images)
    good = choice_versus_chance(models.evaluation, pool, real_chosen)
    bad = choice_versus_chance(models.evaluation, pool, ~real_chosen)
    assert good["chosen_fd"] < good["chance_fd"] and good["chosen_recall"] > good["chance_recall"]
    assert bad["chosen_fd"] > bad["chance_fd"] and bad["chosen_recall"] < bad["chance_recall"]
    assert good["chance_draws"] == 10
    # Chance itself is the same whichever half was chosen: as many drawn from the same pool.
    assert abs(good["chance_fd"] - bad["chance_fd"]) < 0.25 * good["chance_fd"]


def test_no_choice_or_too_small_a_one_is_not_compared_with_chance(digits, models):
    images = digits.images[models.split.curator]
    assert choice_versus_chance(models.evaluation, images, np.ones(len(images), dtype=bool)) == {}
    assert choice_versus_chance(models.evaluation, images, np.arange(len(images)) < CHANCE_MINIMUM - 1) == {}


def test_a_choice_smaller_than_the_matched_size_is_compared_at_its_own_size(digits, models):
    real_images = digits.images[models.split.curator]
    labels = digits.labels[models.split.curator]
    ones = real_images[labels == 1][:5]
    pool = np.concatenate([real_images, ones[np.random.default_rng(2).integers(0, 5, len(real_images))]])
    few = np.zeros(len(pool), dtype=bool)
    few[: models.evaluation.sample_size // 2] = True  # half the matched size, all of them varied digits
    found = choice_versus_chance(models.evaluation, pool, few)
    assert found["chance_size"] == models.evaluation.sample_size // 2
    assert found["chosen_fd"] < 0.5 * found["chance_fd"] and 0 < found["chosen_recall"] <= 1


def test_fewer_samples_than_the_matched_size_are_refused_saying_how_many_are_needed(digits, models):
    size = models.evaluation.sample_size
    with pytest.raises(ValueError, match=f"{size - 1} samples are too few, {size} are needed"):
        evaluate(models.evaluation, digits.images[: size - 1])


def test_too_small_a_test_split_is_refused(digits, models):
    with pytest.raises(ValueError, match="at least 12 test images"):
        Evaluation.fit(models.reference, digits.images[:11], digits.images[100:200])


def test_class_proportions_are_the_curator_splits_labels(digits, models):
    labels = digits.labels[models.split.curator]
    assert models.class_proportions == {c: float(np.mean(labels == c)) for c in range(10)}


def test_the_real_models_are_stored_and_loaded_with_the_split_and_the_evaluation(digits, models):
    loaded = load_model(dump_model(models))
    assert np.array_equal(loaded.split.test, models.split.test)
    curator = digits.images[models.split.curator]
    assert evaluate(loaded.evaluation, curator) == evaluate(models.evaluation, curator)
    assert loaded.real_floor == models.real_floor


def test_unlabelled_data_is_split_as_one_stratum_and_grouped_by_the_rater_model(digits):
    images = digits.images[:1000]
    models = real.fit_real_models(images, np.full(1000, NO_LABEL))
    assert (len(models.split.train), len(models.split.curator), len(models.split.test)) == (550, 150, 300)
    groups = models.rater_model.predict(images[models.split.curator])
    assert models.class_proportions == {int(g): float(np.mean(groups == g)) for g in np.unique(groups)}
    assert models.real_floor["sample_size"] == 150
