"""Staff running experiments from the browser: the create form, actions and their allowed states,
pausing and cancelling a running step, plots and the per-generation page."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from curation import pipeline
from curation.models import Experiment, Generation
from curation.services import ACTIONS, CurationError, create_experiment, perform_action, start_experiment

from .factories import open_generation

pytestmark = pytest.mark.django_db
Status, State = Experiment.Status, Generation.State


@pytest.fixture
def staff_client(client):
    client.force_login(get_user_model().objects.create_user("staff", password="pw", is_staff=True))
    return client


def form_data(**overrides):
    """The create form as the browser posts it for the digits-tiny preset, with changes."""
    data = {
        "name": "tiny loop", "preset": "digits-tiny", "dataset": "digits", "generations": 2, "mix__loop": "augmentation",
        "mix__real_fraction": 0.5, "mix__train_size": 300, "pool_size": 300, "auto_advance": "on",
        "samples_per_generation": 96, "sample__sampler": "dpm-solver++", "sample__steps": 10,
        "sample__temperature": 1.0, "sample__guidance": 0.0, "guidance_source": "own", "guidance_steps": 200,
        "metric_samples": 128, "curation__policy": "human+discriminator",
        "curation__threshold": 0.5, "curation__guard_floor": 0.25, "curation__guard_mode": "classes", "curation__acceptance": "threshold",
        "curation__resample_cap": 4.0, "curation__discriminator": "votes", "curation__keep": 0.8,
        "rating__raters": "simulated",
        "rating__votes_per_sample": 3, "rating__rating_budget": 48, "rating__gold_rate": 0.1,
        "model__block_out_channels": "small", "model__beta_schedule": "squaredcos_cap_v2", "train__steps": 40,
        "train__batch_size": 32, "train__learning_rate": 0.002, "continue_steps": 500, "seed": 3,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_the_form_shows_every_loop_setting_with_the_presets_defaults(staff_client):
    page = staff_client.get("/experiments/new/?preset=digits-tiny").content.decode()
    for name in ("mix__loop", "mix__real_fraction", "mix__accumulate", "samples_per_generation", "sample__temperature",
                 "curation__policy", "curation__threshold", "rating__votes_per_sample", "sample__sampler",
                 "sample__steps", "model__block_out_channels", "model__beta_schedule", "seed", "curation__diversity_guard"):
        assert f'name="{name}"' in page, name
    assert 'name="samples_per_generation" value="96"' in page


def test_creating_an_experiment_stores_the_submitted_settings(staff_client):
    response = staff_client.post("/experiments/new/", form_data(**{"curation__diversity_guard": "on", "seed": 11}))
    experiment = Experiment.objects.get(name="tiny loop")
    assert response.status_code == 302 and response["Location"] == f"/experiments/{experiment.pk}/"
    config = experiment.loop_config
    assert experiment.status == Status.DRAFT and config.seed == 11 and config.curation.diversity_guard
    assert config.train.steps == 40 and config.samples_per_generation == 96


def test_the_levers_of_curation_are_settings_of_the_form(staff_client):
    """Keeping all real data with a synthetic cap, a warm EMA when continuing, and resampled acceptance."""
    response = staff_client.post("/experiments/new/", form_data(**{
        "mix__keep_real": "on", "mix__accumulate": "on", "mix__synthetic_ratio": "0.5", "continue_training": "on",
        "train__warm_ema": "on", "curation__acceptance": "resample", "curation__resample_cap": "3"}))
    assert response.status_code == 302
    config = Experiment.objects.get(name="tiny loop").loop_config
    assert config.mix.keep_real and config.mix.accumulate and config.mix.synthetic_ratio == 0.5
    assert config.train.warm_ema and config.curation.acceptance == "resample" and config.curation.resample_cap == 3
    page = staff_client.get(response["Location"]).content.decode()
    assert "all real data kept" in page and "resampled, cap 3.0" in page and "warm EMA" in page


@pytest.mark.parametrize("overrides, message", [
    ({"mix__loop": "fully-synthetic"}, "a fully-synthetic loop trains on no real data"),
    ({"mix__loop": "fresh", "mix__keep_real": "on"}, "keeping all real data applies to augmentation loops"),
    ({"curation__resample_cap": "0.5"}, "curation.resample_cap must be a number from 1 to 1,000, not 0.5"),
    ({"rating__rating_budget": 500}, "exceeds the samples per generation"),
    ({"generations": 0}, "generations must be a whole number from 1 to 100, not 0"),
    ({"mix__real_fraction": "half"}, "Enter a number"),
    ({"pool_size": 5000}, "larger than the dataset"),
    ({"name": ""}, "This field is required"),
])
def test_bad_settings_get_a_clear_error_and_create_nothing(staff_client, overrides, message):
    response = staff_client.post("/experiments/new/", form_data(**overrides))
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Experiment.objects.exists()


def test_cloning_keeps_the_settings_and_applies_the_changes(staff_client, tiny_config):
    source = create_experiment(name="source", config=tiny_config.replace(seed=5))
    page = staff_client.get(f"/experiments/{source.pk}/clone/").content.decode()
    assert 'value="source (copy)"' in page and 'name="seed" value="5"' in page
    response = staff_client.post(f"/experiments/{source.pk}/clone/", form_data(name="clone", seed=5, curation__policy="none"))
    clone = Experiment.objects.get(name="clone")
    assert response.status_code == 302 and clone.cloned_from == source
    assert clone.loop_config.curation.policy == "none" and clone.loop_config.seed == 5
    assert source.loop_config.curation.policy == "human+discriminator"


# Which action each experiment status allows: everything else is refused and changes nothing.
ALLOWED = {
    Status.DRAFT: {"start", "cancel"},
    Status.RUNNING: {"pause", "advance", "cancel"},
    Status.PAUSED: {"resume", "cancel"},
    Status.FAILED: {"retry", "cancel"},
    Status.DONE: {"advance"},
    Status.CANCELLED: set(),
}


@pytest.mark.parametrize("status", list(ALLOWED))
@pytest.mark.parametrize("action", list(ACTIONS))
def test_an_action_the_state_does_not_allow_is_refused_and_changes_nothing(staff_client, tiny_config, status, action):
    experiment = create_experiment(name="states", config=tiny_config)
    Experiment.objects.filter(pk=experiment.pk).update(status=status)
    if action in ALLOWED[status]:
        return  # allowed transitions are tested one by one below
    response = staff_client.post(f"/experiments/{experiment.pk}/actions/{action}/", follow=True)
    experiment.refresh_from_db()
    assert experiment.status == status and not experiment.generations.exists()
    assert f"cannot {action} &#x27;states&#x27;: it is {status}" in response.content.decode()


def test_start_creates_g0_and_queues_its_training(staff_client, tiny_config, django_capture_on_commit_callbacks, monkeypatch):
    queued = []
    monkeypatch.setattr("curation.tasks.train_generation.apply_async", lambda args, task_id: queued.append(args[0]))
    experiment = create_experiment(name="go", config=tiny_config)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(f"/experiments/{experiment.pk}/actions/start/", follow=True)
    experiment.refresh_from_db()
    g0 = experiment.generations.get()
    assert experiment.status == Status.RUNNING and g0.state == State.PENDING and queued == [g0.pk]
    assert "Started" in response.content.decode()


def test_pause_stops_a_running_step_and_resume_carries_on(tiny_config, monkeypatch):
    experiment = create_experiment(name="p", config=tiny_config)
    g0 = start_experiment(experiment=experiment)
    real_train = pipeline.train_unet

    def train_then_pause(*args, progress, **kwargs):
        perform_action(experiment=experiment, action="pause")
        progress(1, 40, "step 1")  # the next progress write sees the pause
        raise AssertionError("the step should have stopped")

    monkeypatch.setattr(pipeline, "train_unet", train_then_pause)
    monkeypatch.setattr("curation.progress.WRITE_INTERVAL_SECONDS", 0.0)
    g0 = pipeline.run_step(g0.pk)
    experiment.refresh_from_db()
    assert experiment.status == Status.PAUSED and g0.state == State.TRAINING and not g0.error
    monkeypatch.setattr(pipeline, "train_unet", real_train)
    assert perform_action(experiment=experiment, action="resume").pk == g0.pk
    assert pipeline.run_step(g0.pk).state == State.SAMPLING


def test_cancel_stops_the_loop_and_a_finishing_step_cannot_revive_it(tiny_config, monkeypatch):
    experiment = create_experiment(name="c", config=tiny_config)
    g0 = start_experiment(experiment=experiment)

    def train_then_cancel(*args, **kwargs):
        perform_action(experiment=experiment, action="cancel")
        return real_train(*args, **kwargs)  # training itself finishes; its result must not count

    real_train = pipeline.train_unet
    monkeypatch.setattr(pipeline, "train_unet", train_then_cancel)
    # No progress check in between: the race where the step ends just after the cancel.
    monkeypatch.setattr("curation.progress.GenerationProgress.__call__", lambda self, *args: None)
    g0 = pipeline.run_step(g0.pk)
    experiment.refresh_from_db()
    assert experiment.status == Status.CANCELLED and g0.state == State.CANCELLED


def test_retry_resumes_a_failed_step(tiny_config, monkeypatch):
    experiment = create_experiment(name="r", config=tiny_config)
    g0 = start_experiment(experiment=experiment)
    monkeypatch.setattr(pipeline, "sample_images", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError):
        pipeline.run_generation(g0.pk)
    g0.refresh_from_db()
    experiment.refresh_from_db()
    assert g0.state == State.FAILED and g0.failed_step == State.SAMPLING and experiment.status == Status.FAILED
    monkeypatch.undo()
    assert perform_action(experiment=experiment, action="retry").pk == g0.pk
    g0.refresh_from_db()
    assert g0.state == State.SAMPLING and not g0.error
    assert pipeline.run_generation(g0.pk).state in (State.DONE,)


def test_advance_closes_human_rating_early(tiny_config):
    generation = open_generation(tiny_config, samples=10, votes_needed=2)
    experiment = generation.experiment
    with pytest.raises(CurationError, match="no votes yet"):
        perform_action(experiment=experiment, action="advance")
    generation.samples.filter(index__lt=3).update(vote_count=2)
    assert perform_action(experiment=experiment, action="advance").pk == generation.pk
    generation.refresh_from_db()
    assert generation.state == State.CURATING and not generation.open_for_raters
    assert not generation.samples.filter(needs_votes=True).exists()


def test_without_auto_advance_the_next_generation_waits_for_staff(tiny_config):
    experiment = create_experiment(name="manual", config=tiny_config.replace(auto_advance=False, generations=2))
    g0 = pipeline.run_generation(start_experiment(experiment=experiment).pk)
    assert g0.state == State.DONE and experiment.generations.count() == 1
    experiment.refresh_from_db()
    assert experiment.status == Status.RUNNING
    g1 = perform_action(experiment=experiment, action="advance")
    assert g1.index == 1 and g1.training_mix["real"] == 150


def test_advancing_a_finished_experiment_adds_a_generation(tiny_config):
    experiment = create_experiment(name="more", config=tiny_config.replace(generations=1))
    pipeline.run_generation(start_experiment(experiment=experiment).pk)
    experiment.refresh_from_db()
    assert experiment.status == Status.DONE
    g1 = perform_action(experiment=experiment, action="advance")
    experiment.refresh_from_db()
    assert g1.index == 1 and experiment.status == Status.RUNNING and experiment.loop_config.generations == 2


def test_a_finished_generation_has_plots_examples_and_its_page(staff_client, tiny_config):
    experiment = create_experiment(name="seen", config=tiny_config.replace(generations=1))
    pipeline.run_generation(start_experiment(experiment=experiment).pk)
    plot = staff_client.get(f"/experiments/{experiment.pk}/metrics.png")
    assert plot.status_code == 200 and plot.content[:4] == b"\x89PNG"
    detail = staff_client.get(f"/experiments/{experiment.pk}/").content.decode()
    assert "metrics.png" in detail and "/g/0/" in detail
    page = staff_client.get(f"/experiments/{experiment.pk}/g/0/").content.decode()
    assert "Discriminator" in page and "Training set" in page and "accepted.png" in page and "Krippendorff" in page
    for kind in ("accepted", "rejected"):
        response = staff_client.get(f"/experiments/{experiment.pk}/g/0/{kind}.png")
        assert response.status_code in (200, 404)
    assert staff_client.get(f"/experiments/{experiment.pk}/g/0/accepted.png").content[:4] == b"\x89PNG"
    assert staff_client.get(f"/experiments/{experiment.pk}/g/0/other.png").status_code == 404


def test_no_plot_before_any_metrics(staff_client, tiny_config):
    experiment = create_experiment(name="empty", config=tiny_config)
    assert staff_client.get(f"/experiments/{experiment.pk}/metrics.png").status_code == 404


def test_staff_export_from_the_experiment_page_and_download(staff_client, tiny_config, django_capture_on_commit_callbacks):
    import io
    import zipfile

    from curation.models import Export

    experiment = create_experiment(name="exported", config=tiny_config.replace(generations=1))
    pipeline.run_generation(start_experiment(experiment=experiment).pk)
    page = staff_client.get(f"/experiments/{experiment.pk}/").content.decode()
    assert "Export the curated dataset" in page and 'value="hf"' in page
    with django_capture_on_commit_callbacks(execute=True):  # Celery runs the export in process
        staff_client.post(f"/experiments/{experiment.pk}/exports/", {"format": "hf", "generation": "0", "layout": "label"})
    export = Export.objects.get()
    assert export.status == "done" and export.record_count > 0
    assert f"/exports/{export.pk}/download/" in staff_client.get(f"/experiments/{experiment.pk}/").content.decode()
    download = staff_client.get(f"/exports/{export.pk}/download/")
    names = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))).namelist()
    assert "metadata.jsonl" in names
    refused = staff_client.post(f"/experiments/{experiment.pk}/exports/", {"format": "tarball"}, follow=True)
    assert "Export not started" in refused.content.decode() and Export.objects.count() == 1


def test_staff_import_a_dataset_from_the_web(staff_client):
    import io
    import zipfile

    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image

    from curation.models import RealDataset

    def archive(files):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            for name, data in files.items():
                z.writestr(name, data)
        return buffer.getvalue()

    image = io.BytesIO()
    Image.new("L", (8, 8), 50).save(image, format="PNG")
    good = archive({"a/1.png": image.getvalue(), "b/2.png": image.getvalue()})
    response = staff_client.post("/datasets/", {"name": "web set", "archive": SimpleUploadedFile("set.zip", good)})
    assert response.status_code == 302 and RealDataset.objects.get(name="web set").class_names == ["a", "b"]
    bad = archive({"a/1.png": image.getvalue(), "b/2.png": b"not a png"})
    response = staff_client.post("/datasets/", {"name": "bad set", "archive": SimpleUploadedFile("bad.zip", bad)})
    assert response.status_code == 400 and "b/2.png: not an image" in response.content.decode()
    assert not RealDataset.objects.filter(name="bad set").exists()
    assert "web set" in staff_client.get("/experiments/new/").content.decode()
