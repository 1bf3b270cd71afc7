"""Optional experiment tracking in MLflow, against a real MLflow client and a local file store: one run
per experiment, settings as parameters, metrics per generation as steps, grids and plots as artifacts."""

import logging

import pytest
from mlflow.tracking import MlflowClient

from curation import pipeline, tasks, tracking
from curation.models import Experiment, Generation, TrainingMember
from tests.curation.factories import started_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def store(tmp_path, settings, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for a database store otherwise
    settings.MLFLOW_TRACKING_URI = (tmp_path / "mlruns").as_uri()
    settings.MLFLOW_EXPERIMENT_NAME = "ouroboros-test"
    client = MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI)
    return client


def the_run(client, experiment):
    mlflow_experiment = client.get_experiment_by_name("ouroboros-test")
    runs = client.search_runs([mlflow_experiment.experiment_id],
                              filter_string=f"tags.`ouroboros.experiment_id` = '{experiment.pk}'")
    assert len(runs) == 1
    return runs[0]


@pytest.mark.slow
def test_each_experiment_is_one_run_with_its_settings_metrics_per_generation_and_artifacts(
        store, tiny_config, django_capture_on_commit_callbacks):
    experiment, generation = started_experiment(tiny_config.replace(generations=2))
    with django_capture_on_commit_callbacks(execute=True):
        tasks.enqueue(generation.pk)
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.DONE
    run = the_run(store, experiment)
    assert run.info.status == "FINISHED" and run.info.run_name == experiment.name
    assert run.data.params["generations"] == "2"
    assert run.data.params["train.steps"] == str(tiny_config.train.steps)
    history = store.get_metric_history(run.info.run_id, "fd")
    last = experiment.generations.get(index=1)
    assert [m.step for m in history] == [0, 1]
    assert history[1].value == pytest.approx(last.metrics["fd"])
    assert [m.step for m in store.get_metric_history(run.info.run_id, "seconds.train")] == [0, 1]
    artifacts = {a.path for folder in ("generations/g000", "generations/g001", "plots")
                 for a in store.list_artifacts(run.info.run_id, folder)}
    assert {"generations/g000/grid.png", "generations/g001/grid.png", "plots/metrics.png"} <= artifacts
    # A step retried after it logged (the task delivered twice) logs nothing twice.
    tracking.generation_done(last)
    assert len(store.get_metric_history(run.info.run_id, "fd")) == 2


def test_a_failed_generation_fails_its_run(store, tiny_config):
    experiment, generation = started_experiment(tiny_config.replace(generations=1))
    TrainingMember.objects.filter(generation=generation).delete()
    with pytest.raises(ValueError):
        pipeline.run_step(generation.pk)
    assert the_run(store, experiment).info.status == "FAILED"


def test_without_a_tracking_uri_nothing_is_tracked(settings, tiny_config, tmp_path, monkeypatch):
    settings.MLFLOW_TRACKING_URI = ""
    monkeypatch.chdir(tmp_path)
    _, generation = started_experiment(tiny_config.replace(generations=1))
    tracking.generation_done(generation)
    tracking.generation_failed(generation)
    assert list(tmp_path.iterdir()) == []  # no ./mlruns, no mlflow.db


def test_a_tracking_server_that_is_down_never_stops_the_loop(settings, tiny_config, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:9"  # nothing listens on the discard port
    _, generation = started_experiment(tiny_config.replace(generations=1))
    with caplog.at_level(logging.WARNING, logger="curation.tracking"):
        tracking.generation_done(generation)
    assert "MLflow: could not log generation 0" in caplog.text
    assert Generation.objects.get(pk=generation.pk).state == generation.state


def test_nested_settings_and_metrics_become_dotted_names_and_only_finite_numbers_are_metrics():
    assert tracking.flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1]}) == {"a.b": 1, "a.c.d": "x", "e": [1]}
    assert tracking.scalars({"fd": 0.5, "n": 3, "ok": True, "hist": [1, 2], "bad": float("nan"),
                             "verifier": {"auc": 0.8}}) == {"fd": 0.5, "n": 3.0, "verifier.auc": 0.8}
