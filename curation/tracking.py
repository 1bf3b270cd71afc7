"""Experiment tracking in MLflow, optional: with `MLFLOW_TRACKING_URI` set, each experiment is one MLflow
run in the MLflow experiment `MLFLOW_EXPERIMENT_NAME`, tagged with the experiment's id: its settings
as parameters, each generation's metrics and step times as metrics at that generation's step, its
sample grid and the experiment's metric curves as artifacts. The run ends FINISHED with the
experiment's last generation, FAILED with a failed one (and runs again if it is retried).

Best effort: the loop never waits on or fails for its tracking. A generation is logged once (the run's
`ouroboros.generations_logged` tag), so a step that is retried logs nothing twice; a tracking server
that fails is logged as a warning.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path

from django.conf import settings

from curation import media
from curation.models import Experiment, Generation

logger = logging.getLogger(__name__)

EXPERIMENT_TAG = "ouroboros.experiment_id"
LOGGED_TAG = "ouroboros.generations_logged"
PARAM_LENGTH = 6000  # MLflow's limit on a parameter's value


def enabled() -> bool:
    return bool(settings.MLFLOW_TRACKING_URI)


def generation_done(generation: Generation) -> None:
    """Log a finished generation (and end the run after the experiment's last one)."""
    if not enabled():
        return
    try:
        _log_generation(Generation.objects.select_related("experiment__dataset").get(pk=generation.pk))
    except Exception:  # a tracking server down must not stop the loop
        logger.warning("MLflow: could not log generation %s of experiment %s", generation.index,
                       generation.experiment_id, exc_info=True)


def generation_failed(generation: Generation) -> None:
    """Mark the experiment's run FAILED."""
    if not enabled():
        return
    try:
        client = _client()
        client.set_terminated(_run_id(client, generation.experiment), status="FAILED")
    except Exception:
        logger.warning("MLflow: could not mark the run of experiment %s failed", generation.experiment_id,
                       exc_info=True)


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI)


def _run_id(client, experiment: Experiment) -> str:
    """The experiment's run, created with its settings as parameters the first time."""
    from mlflow.entities import Param

    found = client.get_experiment_by_name(settings.MLFLOW_EXPERIMENT_NAME)
    mlflow_experiment = found.experiment_id if found else client.create_experiment(settings.MLFLOW_EXPERIMENT_NAME)
    runs = client.search_runs([mlflow_experiment], filter_string=f"tags.`{EXPERIMENT_TAG}` = '{experiment.pk}'",
                              max_results=1)
    if runs:
        return runs[0].info.run_id
    run = client.create_run(mlflow_experiment, run_name=experiment.name, tags={
        EXPERIMENT_TAG: str(experiment.pk), "ouroboros.dataset": experiment.dataset.name if experiment.dataset_id else "",
    })
    params = [Param(key, str(value)[:PARAM_LENGTH]) for key, value in flatten(experiment.config).items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters a batch
        client.log_batch(run.info.run_id, params=params[start:start + 100])
    return run.info.run_id


def _log_generation(generation: Generation) -> None:
    from mlflow.entities import Metric

    experiment = generation.experiment
    client = _client()
    run_id = _run_id(client, experiment)
    run = client.get_run(run_id)
    if int(run.data.tags.get(LOGGED_TAG, -1)) >= generation.index:
        return
    if run.info.status != "RUNNING":  # a failed experiment retried: its run goes on
        client.update_run(run_id, status="RUNNING")
    now = int(time.time() * 1000)
    values = {**scalars(generation.metrics), **{f"seconds.{step}": seconds for step, seconds in
                                                 scalars(generation.timings or {}).items()}}
    metrics = [Metric(key, value, now, generation.index) for key, value in values.items()]
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])
    if generation.grid_image:
        _log_bytes(client, run_id, media.read(generation.grid_image.name),
                   generation.grid_image.name.rsplit("/", 1)[-1], artifact_path=f"generations/g{generation.index:03d}")
    from curation.selectors import experiment_plot_png

    plot = experiment_plot_png(experiment)
    if plot is not None:
        _log_bytes(client, run_id, plot, "metrics.png", artifact_path="plots")
    client.set_tag(run_id, LOGGED_TAG, str(generation.index))
    if generation.index + 1 >= experiment.loop_config.generations:
        client.set_terminated(run_id, status="FINISHED")


def _log_bytes(client, run_id: str, data: bytes, name: str, *, artifact_path: str) -> None:
    """MLflow logs artifacts from files: one written for the purpose, under its own name."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def flatten(values: dict, prefix: str = "") -> dict:
    """Nested settings as dotted keys: {"train": {"steps": 5}} -> {"train.steps": 5}."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def scalars(values: dict) -> dict[str, float]:
    """The finite numbers among a generation's metrics (dotted keys for nested ones; lists left out)."""
    return {key: float(value) for key, value in flatten(values).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}
