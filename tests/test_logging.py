"""LOG_FORMAT=json: one JSON object a line, carrying the experiment, generation, step and task."""

import json
import logging
import os
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from pythonjsonlogger.json import JsonFormatter

from curation import pipeline
from curation.log_context import ContextFilter, log_context
from curation.models import Generation
from tests.curation.factories import started_experiment


@pytest.fixture
def json_lines():
    """A JSON handler as LOG_FORMAT=json configures it, on the project's loggers; yields a reader."""
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("curation")
    logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


def test_a_line_carries_the_context_around_it_and_only_there(json_lines):
    log = logging.getLogger("curation.test")
    with log_context(task_id="t-1"):
        with log_context(experiment_id=3, generation_id=7, step=None):
            log.warning("inner")
        log.warning("outer")
    log.warning("outside")
    inner, outer, outside = json_lines()
    assert (inner["message"], inner["experiment_id"], inner["generation_id"], inner["task_id"]) == ("inner", 3, 7, "t-1")
    assert "step" not in inner  # None is left out
    assert outer["task_id"] == "t-1" and "experiment_id" not in outer
    assert "task_id" not in outside


@pytest.mark.django_db
def test_a_failing_step_logs_its_experiment_generation_and_step(json_lines, tiny_config, monkeypatch):
    experiment, generation = started_experiment(tiny_config)

    def broken(generation, *, bar=False):
        raise RuntimeError("disk full")

    monkeypatch.setitem(pipeline.STEPS, Generation.State.PENDING, broken)
    with pytest.raises(RuntimeError):
        pipeline.run_step(generation.pk)
    failure = next(line for line in json_lines() if line["levelname"] == "ERROR")
    assert failure["experiment_id"] == experiment.pk and failure["generation_id"] == generation.pk
    assert failure["step"] == "pending" and failure["generation_index"] == 0 and "disk full" in failure["exc_info"]


def test_the_setting_switches_every_handler_to_json_and_refuses_other_formats():
    code = "import django, logging; django.setup(); logging.getLogger('curation.x').warning('hello')"
    env = {**os.environ, "LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "config.settings"}
    done = subprocess.run([sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True)
    line = json.loads(done.stderr.strip().splitlines()[-1])
    assert (line["level"], line["logger"], line["message"]) == ("WARNING", "curation.x", "hello") and line["time"]
    bad = subprocess.run([sys.executable, "-c", code], cwd=settings.BASE_DIR, env={**env, "LOG_FORMAT": "xml"},
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "LOG_FORMAT must be text or json, not 'xml'" in bad.stderr
