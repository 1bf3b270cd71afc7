"""Real services: tasks through Redis to real `celery worker` processes, routed by queue, and a
generation that survives the loss of its worker. Runs where REDIS_URL is set (CI starts Redis)."""

import os
import signal
import time

import pytest
from django.conf import settings

from curation import tasks
from curation.models import Experiment, Generation
from tests.curation.factories import started_experiment

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("redis"), reason="needs REDIS_URL (a Redis server)"),
]


def wait_for(predicate, *, seconds: float, what: str, workers=()):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for worker in workers:
            assert worker.poll() is None, "a worker exited"
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def finished(experiment):
    experiment.refresh_from_db()
    return experiment.status in (Experiment.Status.DONE, Experiment.Status.FAILED)


def test_training_and_sampling_wait_for_a_gpu_queue_worker_and_the_rest_runs_on_default(start_worker, tiny_config):
    cpu = start_worker(queues="default", name="cpu")
    experiment, generation = started_experiment(tiny_config.replace(generations=1))
    tasks.enqueue(generation.pk)
    time.sleep(8)  # a default-queue worker alone never picks up training
    generation.refresh_from_db()
    assert generation.state == Generation.State.PENDING and generation.progress_fraction == 0

    gpu = start_worker(queues="gpu", name="gpu")
    wait_for(lambda: finished(experiment), seconds=240, what="the experiment", workers=(cpu, gpu))
    assert experiment.status == Experiment.Status.DONE, [(g.state, g.error) for g in experiment.generations.all()]
    generation.refresh_from_db()
    assert generation.samples.count() == tiny_config.samples_per_generation
    assert generation.discriminators.count() == 1  # curation ran on the default queue


def test_a_generation_survives_a_worker_killed_mid_training(start_worker, tiny_config):
    """SIGKILL the worker half-way through training: its task, never acknowledged, goes back to the
    queue once the visibility timeout passes; a second worker resumes from the last checkpoint and
    the generation finishes with every sample exactly once."""
    config = tiny_config.replace(**{"generations": 1, "train.steps": 1200, "train.checkpoint_every": 100})
    fast_redelivery = {"CELERY_VISIBILITY_TIMEOUT": "5"}
    first = start_worker(name="first", environment=fast_redelivery)
    experiment, generation = started_experiment(config)
    tasks.enqueue(generation.pk)

    def step():
        generation.refresh_from_db()
        message = generation.progress_message
        return int(message.split("training step ")[1].split("/")[0]) if "training step" in message else 0

    wait_for(lambda: step() >= 350, seconds=240, what="training to pass step 350", workers=(first,))
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = step()
    assert killed_at < config.train.steps

    second = start_worker(name="second", environment=fast_redelivery)
    wait_for(lambda: finished(experiment), seconds=300, what="the redelivered generation", workers=(second,))
    assert experiment.status == Experiment.Status.DONE, [(g.state, g.error) for g in experiment.generations.all()]
    generation.refresh_from_db()
    resumed = generation.metrics["train_resumed_from_step"]
    assert 300 <= resumed <= killed_at and resumed % 100 == 0  # from a checkpoint, not from scratch
    indices = list(generation.samples.values_list("index", flat=True))
    assert sorted(indices) == list(range(config.samples_per_generation))  # none missing, none twice
    assert generation.samples.count() == config.samples_per_generation


def test_readiness_names_the_workers_that_answer_and_turns_503_when_none_does(start_worker, admin_client):
    cpu = start_worker(queues="default", name="ready-check")
    ready = wait_for(lambda: (r := admin_client.get("/healthz/ready")).status_code == 200 and r, seconds=60,
                     what="the worker to answer pings", workers=(cpu,))
    assert "ready-check@" in ready.json()["checks"]["workers"]["detail"]
    cpu.send_signal(signal.SIGTERM)
    cpu.wait(timeout=30)
    down = admin_client.get("/healthz/ready")
    assert down.status_code == 503 and not down.json()["checks"]["workers"]["ok"]
