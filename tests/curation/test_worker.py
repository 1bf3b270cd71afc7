"""The embedded default with a real `celery worker` process: filesystem broker, SQLite file, no server."""

import shutil
import time
from pathlib import Path

import pytest
from django.conf import settings

from curation import tasks
from curation.models import Experiment, Vote
from tests.curation.factories import started_experiment

pytestmark = [pytest.mark.slow, pytest.mark.embedded, pytest.mark.django_db(transaction=True)]


def test_a_two_generation_loop_runs_through_a_real_worker_on_the_filesystem_broker(worker, tiny_config):
    if settings.CELERY_BROKER_URL != "filesystem://":
        pytest.skip("this test is about the embedded broker; REDIS_URL is set")
    experiment, generation = started_experiment(tiny_config.replace(generations=2))
    tasks.enqueue(generation.pk)  # committed at once: the test runs outside a transaction

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        experiment.refresh_from_db()
        if experiment.status in (Experiment.Status.DONE, Experiment.Status.FAILED):
            break
        assert worker.poll() is None, "the worker exited"
        time.sleep(1)
    assert experiment.status == Experiment.Status.DONE, [(g.index, g.state, g.error) for g in experiment.generations.all()]
    for g in experiment.generations.order_by("index"):
        assert g.samples.count() == tiny_config.samples_per_generation
        assert Vote.objects.filter(sample__generation=g).count() == 48 * 3
        assert g.metrics["fd"] is not None and g.discriminators.count() == 1
    shutil.rmtree(Path(settings.MEDIA_ROOT) / "experiments", ignore_errors=True)
