"""Simulated raters: calibrated on real images they have not seen, the default panel accepts nearly all
held-out real digits; vote noise is fixed by the run's seed; fixed-threshold raters vote as before."""

import numpy as np
import pytest

from curation.ml.experiment_config import ExperimentConfig, default_panel, preset
from curation.ml.raters import (
    RaterModel,
    SimulatedRaterConfig,
    false_reject_by_class,
    panel_vote_share,
    rater_threshold,
    simulated_votes,
)
from training.data import load_digits_dataset, split_dataset


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


@pytest.fixture(scope="module")
def split(digits):
    return split_dataset(digits.labels)


@pytest.fixture(scope="module")
def model(digits, split):
    return RaterModel.fit(digits.images[split.curator], digits.labels[split.curator], seed=0)


@pytest.mark.parametrize("run_seed", [0, 1, 2])
def test_the_default_panel_accepts_at_least_97_percent_of_held_out_real_digits(digits, split, model, run_seed):
    rejected = false_reject_by_class(
        model, default_panel(), 3, digits.images[split.test], digits.labels[split.test], run_seed=run_seed
    )
    assert rejected["images"] == len(split.test) and set(rejected["by_class"]) == {str(c) for c in range(10)}
    assert 1.0 - rejected["overall"] >= 0.97
    assert max(rejected["by_class"].values()) <= 0.1  # no digit singled out


def test_the_default_panel_still_turns_down_noise_more_often_than_real_digits(digits, split, model):
    noise = np.random.default_rng(0).random((len(split.test), 1, 8, 8)).astype(np.float32)
    real = false_reject_by_class(model, default_panel(), 3, digits.images[split.test], digits.labels[split.test])
    junk = false_reject_by_class(model, default_panel(), 3, noise, np.zeros(len(noise), int))
    assert junk["overall"] > 5 * real["overall"]


@pytest.mark.parametrize("reject_real", [0.01, 0.05, 0.2])
def test_a_calibrated_threshold_turns_down_that_share_of_out_of_fold_real_images(model, reject_real):
    confidence = model.out_of_fold_confidence
    share = np.mean(confidence < model.threshold_for(reject_real))
    assert share == pytest.approx(reject_real, abs=1.5 / len(confidence))
    assert rater_threshold(SimulatedRaterConfig(threshold=0.99, reject_real=reject_real), model) == model.threshold_for(reject_real)


def test_out_of_fold_confidences_come_from_models_that_did_not_see_the_image(digits, split, model):
    assert model.out_of_fold_confidence.shape == (len(split.curator),)
    in_sample = model.confidence(digits.images[split.curator])
    assert model.out_of_fold_confidence.mean() < in_sample.mean() - 0.01


def test_the_rater_model_predicts_the_class_of_held_out_digits(digits, split, model):
    assert np.mean(model.predict(digits.images[split.test]) == digits.labels[split.test]) > 0.9


def test_vote_noise_repeats_for_a_run_seed_and_differs_between_run_seeds():
    rater = SimulatedRaterConfig(threshold=0.5, noise=0.3, seed=7)
    confidence, keys = np.ones(2000), np.arange(2000)
    first = simulated_votes(confidence, keys, rater, run_seed=11)
    assert np.array_equal(first, simulated_votes(confidence, keys, rater, run_seed=11))
    other = simulated_votes(confidence, keys, rater, run_seed=12)
    assert not np.array_equal(first, other)
    assert np.mean(~first) == pytest.approx(0.3, abs=0.04) and np.mean(~other) == pytest.approx(0.3, abs=0.04)
    # A sample's vote depends on its key, not on which other samples are rated with it.
    assert np.array_equal(simulated_votes(confidence[:10], keys[5:15], rater, run_seed=11), first[5:15])


def test_a_fixed_threshold_rater_votes_as_before(model):
    rater = SimulatedRaterConfig(threshold=0.7, noise=0.0, bias=0.1, seed=2)
    confidence = np.linspace(0.0, 1.0, 101)
    assert np.array_equal(simulated_votes(confidence, np.arange(101), rater), confidence + 0.1 >= 0.7)
    assert rater_threshold(rater, model) == 0.7


def test_a_calibrated_rater_without_its_resolved_threshold_is_refused():
    with pytest.raises(ValueError, match="rater_threshold"):
        simulated_votes(np.ones(3), np.arange(3), SimulatedRaterConfig(reject_real=0.01))


def test_a_stored_panel_without_reject_real_loads_with_its_fixed_thresholds():
    data = preset("digits").to_dict()
    data["rating"]["panel"] = [{"threshold": t, "noise": 0.05, "bias": 0.0, "seed": 1} for t in (0.8, 0.7, 0.9)]
    panel = ExperimentConfig.from_dict(data).rating.panel
    assert [(r.threshold, r.reject_real) for r in panel] == [(0.8, None), (0.7, None), (0.9, None)]


def test_the_panel_rotates_its_raters_over_samples_as_the_pipeline_does(model):
    always, never = SimulatedRaterConfig(threshold=0.0, noise=0.0), SimulatedRaterConfig(threshold=1.0, noise=0.0)
    panel = (always, never, always)
    confidence, indices = np.full(6, 0.5), np.arange(6)
    one = panel_vote_share(confidence, indices, indices, panel, model, votes_per_sample=1)
    assert one.tolist() == [1, 0, 1, 1, 0, 1]
    two = panel_vote_share(confidence, indices, indices, panel, model, votes_per_sample=2)
    assert two.tolist() == [0.5, 0.5, 1, 0.5, 0.5, 1]
