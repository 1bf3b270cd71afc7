"""The loop through Celery: samples, votes, discriminator versions, metrics and mixes per generation."""

import json

import numpy as np
import pytest
from django.core.management import call_command

from curation import pipeline, tasks
from curation.models import DiscriminatorVersion, Experiment, Generation, Sample, TrainingMember, Vote
from curation.datasets import dataset_split, real_models
from curation import media
from curation.ml.imaging import read_provenance
from curation.services import CurationError, create_experiment
from tests.curation.factories import started_experiment

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def run_through_celery(generation, capture):
    """Enqueue as the web does; tasks run in-process and enqueue their successors on commit."""
    with capture(execute=True):
        tasks.enqueue(generation.pk)


def test_a_two_generation_loop_through_celery_produces_everything_each_generation(
    tiny_config, django_capture_on_commit_callbacks
):
    config = tiny_config.replace(**{"generations": 2, "mix.real_fraction": 0.5, "mix.train_size": 200})
    experiment, generation = started_experiment(config)
    run_through_celery(generation, django_capture_on_commit_callbacks)

    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.DONE
    generations = list(experiment.generations.order_by("index"))
    assert [g.state for g in generations] == ["done", "done"]
    for g in generations:
        assert g.samples.count() == config.samples_per_generation
        rated = g.samples.filter(to_rate=True)
        assert rated.count() == config.rating.rating_budget
        assert Vote.objects.filter(sample__generation=g).count() == config.rating.rating_budget * config.rating.votes_per_sample
        assert DiscriminatorVersion.objects.filter(generation=g).count() == 1
        assert g.samples.filter(accepted__isnull=True).count() == 0
        for name in ("fd", "kid", "precision", "recall", "density", "coverage", "memorization", "classes_covered",
                     "acceptance_rate", "discriminator_heldout_auc"):
            assert name in g.metrics, name
        # Measured on the held-out test split at the floor's matched size, whatever metric_samples says.
        assert g.metrics["metric_samples"] == real_models(experiment.dataset_id).evaluation.sample_size
        assert g.metrics["discriminator_heldout_count"] == config.samples_per_generation - config.rating.rating_budget
        assert g.grid_image.name and g.checkpoint_sha256

    # G1 trained on exactly the configured mix: 100 real from the G0 pool, 100 accepted G0 samples.
    g1 = generations[1]
    members = TrainingMember.objects.filter(generation=g1)
    real = members.filter(real_image__isnull=False)
    synthetic = members.filter(sample__isnull=False)
    accepted_g0 = generations[0].samples.filter(accepted=True).count()
    assert real.count() == 100
    assert set(real.values_list("real_image_id", flat=True)) <= set(experiment.real_pool)
    assert synthetic.count() == min(100, accepted_g0)
    assert all(s.generation_id == generations[0].pk and s.accepted for s in Sample.objects.filter(pk__in=synthetic.values("sample_id")))
    assert g1.training_mix == {"real": 100, "fresh": 0, "synthetic": synthetic.count(),
                               "synthetic_by_generation": {"0": synthetic.count()} if synthetic.count() else {},
                               "shortfall": 100 - synthetic.count()}


def test_sampling_twice_never_duplicates_and_refills_exactly_what_is_missing(tiny_config):
    experiment, generation = started_experiment(tiny_config.replace(generations=1))
    assert experiment.real_floor == {}  # created by the service, as the API does: no floor yet
    generation = pipeline.run_step(generation.pk)  # train
    generation = pipeline.run_step(generation.pk)  # sample
    assert generation.state == Generation.State.RATING
    experiment.refresh_from_db()
    floor = experiment.real_floor["fd"]  # set with the first metrics, whatever created the experiment
    assert 0 < floor["low"] <= floor["mean"] <= floor["high"] and experiment.real_floor["sample_size"] > 100
    before = dict(generation.samples.values_list("index", "sha256"))
    assert len(before) == tiny_config.samples_per_generation

    # A retried task, after a crash that lost some rows: run the sampling step again.
    generation.samples.filter(index__in=[3, 40, 77]).delete()
    Generation.objects.filter(pk=generation.pk).update(state=Generation.State.SAMPLING)
    generation = pipeline.run_step(generation.pk)
    after = dict(generation.samples.values_list("index", "sha256"))
    assert after == before


def test_a_failed_step_is_recorded_with_its_reason_and_the_step_to_resume(tiny_config):
    _, generation = started_experiment(tiny_config.replace(generations=1))
    TrainingMember.objects.filter(generation=generation).delete()
    with pytest.raises(ValueError):
        pipeline.run_step(generation.pk)
    generation.refresh_from_db()
    assert generation.state == Generation.State.FAILED
    assert generation.failed_step == Generation.State.TRAINING
    assert "empty training set" in generation.error
    assert generation.experiment.status == Experiment.Status.FAILED


def test_a_fresh_loop_longer_than_its_reservoir_is_refused_up_front(tiny_config):
    config = tiny_config.replace(**{"mix.loop": "fresh", "mix.real_fraction": 0.5, "mix.train_size": 1000,
                                    "pool_size": 400, "generations": 3})
    with pytest.raises(CurationError, match="can run 1 generation"):
        create_experiment(name="too fresh", config=config)


def test_a_fresh_loop_draws_new_real_images_every_generation(tiny_config, django_capture_on_commit_callbacks):
    config = tiny_config.replace(**{"mix.loop": "fresh", "mix.real_fraction": 0.5, "mix.train_size": 100, "generations": 3})
    experiment, generation = started_experiment(config)
    run_through_celery(generation, django_capture_on_commit_callbacks)
    fresh_sets = [
        set(TrainingMember.objects.filter(generation__experiment=experiment, generation__index=i, fresh=True)
            .values_list("real_image_id", flat=True))
        for i in (1, 2)
    ]
    assert len(fresh_sets[0]) == len(fresh_sets[1]) == 50
    assert not fresh_sets[0] & fresh_sets[1]
    assert not (fresh_sets[0] | fresh_sets[1]) & set(experiment.real_pool)
    # Drawn from the training split only: the curator and test splits are never trained on.
    assert (fresh_sets[0] | fresh_sets[1] | set(experiment.real_pool)) <= set(dataset_split(experiment.dataset_id).train)


def test_the_levers_run_through_the_loop_keep_real_capped_synthetic_verifier_resampling_coverage(
    tiny_config, django_capture_on_commit_callbacks
):
    config = tiny_config.replace(**{
        "generations": 3, "mix.keep_real": True, "mix.accumulate": True, "mix.synthetic_ratio": 0.25,
        "continue_training": True, "continue_steps": 20, "train.warm_ema": True, "curation.policy": "human+discriminator",
        "curation.discriminator": "verifier", "curation.acceptance": "resample", "curation.diversity_guard": True,
        "curation.guard_mode": "coverage"})
    experiment, generation = started_experiment(config)
    run_through_celery(generation, django_capture_on_commit_callbacks)
    generations = list(experiment.generations.order_by("index"))
    assert [g.state for g in generations] == ["done"] * 3
    for g in generations:
        low, auc, high = (g.metrics[k] for k in ("verifier_auc_low", "verifier_auc", "verifier_auc_high"))
        assert 0 <= low <= auc <= high <= 1
        examples = g.metrics["verifier_examples"]
        assert examples["real"] == len(real_models(experiment.dataset_id).split.curator)
        assert examples["generated"] == config.samples_per_generation - config.rating.rating_budget
        # Earlier generations' voted samples are pooled in.
        assert examples["voted_up"] + examples["voted_down"] == config.rating.rating_budget * (g.index + 1)
        assert not DiscriminatorVersion.objects.filter(generation=g).exists()
        assert g.samples.filter(discriminator_score__isnull=True).count() == 0
    # The whole pool every generation, synthetic capped at a quarter of it, drawn from all accepted so far.
    for g in generations[1:]:
        assert g.training_mix["real"] == config.pool_size
        accepted = Sample.objects.filter(generation__experiment=experiment, generation__index__lt=g.index, accepted=True)
        assert g.training_mix["synthetic"] == min(accepted.count(), config.pool_size // 4)


@pytest.mark.parametrize("policy", ["match", "random-matched"])
def test_the_match_policy_keeps_its_share_chosen_toward_the_curator_split(
    tiny_config, django_capture_on_commit_callbacks, policy
):
    config = tiny_config.replace(**{"generations": 2, "curation.policy": policy, "curation.match": "match",
                                    "curation.keep": 0.5})
    experiment, generation = started_experiment(config)
    run_through_celery(generation, django_capture_on_commit_callbacks)
    g0, g1 = experiment.generations.order_by("index")
    assert (g0.state, g1.state) == ("done", "done")
    for g in (g0, g1):
        accepted = g.samples.filter(accepted=True)
        assert accepted.count() == round(0.5 * g.samples.count())
        assert set(accepted.values_list("accept_reason", flat=True)) == {"match" if policy == "match" else "random"}
        assert "chosen_fd" in g.metrics and "chance_fd" in g.metrics  # measured against chance, as every choice is


@pytest.mark.parametrize("source", ["own", "rejected"])
def test_negative_guidance_trains_a_guide_on_the_previous_generations_samples(
    tiny_config, django_capture_on_commit_callbacks, source
):
    config = tiny_config.replace(**{"generations": 2, "sample.guidance": 1.0, "guidance_source": source,
                                    "guidance_steps": 10})
    experiment, generation = started_experiment(config)
    run_through_celery(generation, django_capture_on_commit_callbacks)
    g0, g1 = experiment.generations.order_by("index")
    assert (g0.state, g1.state) == ("done", "done") and "guide_images" not in g0.metrics
    own = g0.samples.count() if source == "own" else g0.samples.filter(accepted=False).count()
    assert g1.metrics["guide_images"] == own > 0
    card = json.loads(media.read(f"{pipeline._guide_dir(g1)}/checkpoint.json"))
    assert card["step"] == 10 and card["init_from"].endswith(g1.checkpoint_dir)
    assert read_provenance(media.read(g1.samples.first().image.name))["guidance"] == "1.0"


@pytest.mark.embedded
def test_run_experiment_writes_the_report(tmp_path):
    output = tmp_path / "report.json"
    call_command("run_experiment", "--preset", "digits-tiny", "--generations", "2", "--curation", "discriminator",
                 "--loop", "fully-synthetic", "--raters", "simulated", "--output", str(output))
    report = json.loads(output.read_text())
    generations = report["generations"]
    assert [g["index"] for g in generations] == [0, 1]
    for key in ("fd", "precision", "recall", "density", "coverage", "classes_covered", "acceptance_rate",
                "train_real", "train_synthetic"):
        assert all(g[key] is not None for g in generations), key
    assert generations[0]["train_real"] == 300 and generations[0]["train_synthetic"] == 0
    assert generations[1]["train_real"] == 0 and generations[1]["train_synthetic"] > 0
    assert report["real_floor"]["fd"]["mean"] > 0
    assert all(0 <= g["memorization"] <= 1 for g in generations)
    assert np.isfinite(generations[1]["fd"])


def test_run_experiment_rejects_a_bad_configuration_clearly(tmp_path):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="set the real fraction to 0"):
        call_command("run_experiment", "--preset", "digits-tiny", "--loop", "fully-synthetic", "--real-fraction", "0.5",
                     "--output", str(tmp_path / "x.json"))


def test_a_discriminator_is_reused_only_for_exactly_the_same_verdicts(tiny_config):
    _, generation = started_experiment(tiny_config.replace(generations=1))
    features = np.random.default_rng(0).normal(size=(10, 69))
    verdicts = np.array([True, False] * 5)
    first = pipeline._discriminator_for(generation, list(range(10)), features, verdicts)
    assert pipeline._discriminator_for(generation, list(range(10)), features, verdicts) == first
    flipped = verdicts.copy()
    flipped[0] = not flipped[0]
    # As many samples, other verdicts (say, a refit on partial votes): a new version.
    second = pipeline._discriminator_for(generation, list(range(10)), features, flipped)
    assert second.version == first.version + 1 and second.vote_count == 10
