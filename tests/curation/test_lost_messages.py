"""A queued message lost with its broker does not stall the loop: a Redis of the test's own, without
persistence, is restarted with a generation's step queued in it; Celery beat's reconciler queues the
step again and a real worker completes the generation, every sample exactly once."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import redis
from celery import Celery

from curation import supervision
from curation.models import Experiment, Generation
from tests.conftest import ROOT, database_url
from tests.curation.factories import started_experiment
from tests.curation.test_redis_workers import finished, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


@pytest.fixture
def restartable_redis(tmp_path):
    """A redis-server on a free loopback port, keeping nothing on disk; `.restart()` loses every message."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    class Server:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis(port=port)
        process = None

        def start(self):
            self.process = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                 "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
            wait_for(self._ping, seconds=10, what="redis-server")

        def stop(self):
            self.process.terminate()
            self.process.wait()

        def restart(self):
            self.stop()
            self.start()

        def _ping(self):
            try:
                return self.client.ping()
            except redis.ConnectionError:
                return False

    server = Server()
    server.start()
    yield server
    server.stop()


def test_a_step_lost_with_a_redis_restart_is_queued_again_and_the_generation_completes(
        restartable_redis, start_worker, tiny_config, tmp_path):
    config = tiny_config.replace(generations=1)
    experiment, generation = started_experiment(config)
    # Queued as tasks.enqueue queues it (the message id recorded on the generation), on this Redis.
    task_id = supervision.mark_queued(generation.pk)
    producer = Celery("test-producer", broker=restartable_redis.url, set_as_current=False)
    producer.send_task("curation.train_generation", args=[generation.pk], task_id=task_id, queue="gpu")
    producer.close()
    assert restartable_redis.client.llen("gpu") == 1

    restartable_redis.restart()  # no persistence: the message is gone, the database still says pending
    assert restartable_redis.client.llen("gpu") == 0

    # The reconciler every second (beat), for steps idle for 3 s (the worker's setting).
    environment = {"CELERY_BROKER_URL": restartable_redis.url, "REDIS_URL": restartable_redis.url,
                   "OUROBOROS_RECONCILE_SECONDS": "1", "OUROBOROS_STALL_SECONDS": "3"}
    worker = start_worker(environment=environment)
    time.sleep(3)
    generation.refresh_from_db()
    assert generation.state == Generation.State.PENDING and generation.progress_updated_at is None

    beat = subprocess.Popen(  # as compose runs it, beside the workers
        [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "WARNING",
         "--schedule", str(tmp_path / "celerybeat-schedule")],
        cwd=ROOT, env={**os.environ, **environment, "DATABASE_URL": database_url()},
    )
    try:
        wait_for(lambda: finished(experiment), seconds=120, what="the generation", workers=(worker, beat))
    finally:
        beat.kill()
        beat.wait()
    assert experiment.status == Experiment.Status.DONE, [(g.state, g.error) for g in experiment.generations.all()]
    generation.refresh_from_db()
    assert generation.queued_task_id != task_id  # the reconciler's message ran it
    indices = sorted(generation.samples.values_list("index", flat=True))
    assert indices == list(range(config.samples_per_generation))  # none missing, none twice
