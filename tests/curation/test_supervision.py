"""Nothing stalls and nothing runs forever: superseded messages are dropped, a step that keeps killing
its worker fails its generation after OUROBOROS_STEP_MAX_STARTS starts, a step past its time limit
fails with the reason, and the reconciler re-queues exactly the steps that have stalled."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.utils import timezone

from curation import pipeline, supervision, tasks
from curation.models import Experiment, Generation
from curation.services import perform_action

from .factories import started_experiment

pytestmark = pytest.mark.django_db
State = Generation.State


class WorkerDied(BaseException):
    """What a task sees of its worker being killed: nothing after this point runs."""


def deliver(generation, task_id):
    """One delivery of the message `task_id` for the generation's step, as a worker runs it."""
    tasks.TASK_FOR_STATE[Generation.objects.get(pk=generation.pk).state].apply(args=(generation.pk,), task_id=task_id)


def test_a_message_superseded_by_a_newer_one_is_dropped_and_the_newer_one_runs(tiny_config, monkeypatch):
    _, generation = started_experiment(tiny_config.replace(generations=1))
    ran = []
    monkeypatch.setattr(pipeline, "run_step", lambda pk: ran.append(pk) or Generation.objects.get(pk=pk))
    old = supervision.mark_queued(generation.pk)
    new = supervision.mark_queued(generation.pk)  # e.g. the reconciler queued it again
    deliver(generation, old)
    assert ran == []
    deliver(generation, new)
    assert ran == [generation.pk]


def test_a_step_that_keeps_killing_its_worker_fails_its_generation_after_the_limit(tiny_config, monkeypatch):
    experiment, generation = started_experiment(tiny_config.replace(generations=1))
    starts = []

    def killed(pk):
        starts.append(pk)
        raise WorkerDied

    monkeypatch.setattr(pipeline, "run_step", killed)
    task_id = supervision.mark_queued(generation.pk)
    for _ in range(settings.OUROBOROS_STEP_MAX_STARTS):  # acks late: the same message, redelivered
        with pytest.raises(WorkerDied):
            deliver(generation, task_id)
    deliver(generation, task_id)  # once more: refused, without running the step

    assert len(starts) == settings.OUROBOROS_STEP_MAX_STARTS == 3
    generation.refresh_from_db()
    experiment.refresh_from_db()
    assert generation.state == State.FAILED and experiment.status == Experiment.Status.FAILED
    assert generation.failed_step == State.PENDING
    assert generation.error == ("the training step was started 3 times and its worker died each time (killed for "
                                "memory, or at the time limit); see the worker logs; Retry runs it again")

    # Retry runs it again, with a clean count.
    perform_action(experiment=experiment, action="retry")
    monkeypatch.setattr(pipeline, "run_step", lambda pk: starts.append(pk) or Generation.objects.get(pk=pk))
    deliver(generation, supervision.mark_queued(generation.pk))
    assert len(starts) == 4
    generation.refresh_from_db()
    assert generation.state == State.PENDING and generation.unfinished_starts == 0


def test_only_unfinished_starts_count(tiny_config, monkeypatch):
    """A step that returns (done, paused, failed with an error) clears its count: pausing and resuming
    any number of times never fails a generation."""
    _, generation = started_experiment(tiny_config.replace(generations=1))
    task_id = supervision.mark_queued(generation.pk)
    monkeypatch.setattr(pipeline, "run_step", lambda pk: (_ for _ in ()).throw(WorkerDied))
    with pytest.raises(WorkerDied):
        deliver(generation, task_id)
    assert Generation.objects.get(pk=generation.pk).unfinished_starts == 1
    monkeypatch.setattr(pipeline, "run_step", lambda pk: Generation.objects.get(pk=pk))
    for _ in range(5):
        deliver(generation, task_id)
    generation.refresh_from_db()
    assert generation.state == State.PENDING and generation.unfinished_starts == 0


def test_a_step_past_its_soft_time_limit_fails_its_generation_with_the_reason(tiny_config, monkeypatch):
    experiment, generation = started_experiment(tiny_config.replace(generations=1))

    def too_long(generation, *, bar=False):
        raise SoftTimeLimitExceeded()

    monkeypatch.setitem(pipeline.STEPS, State.PENDING, too_long)
    deliver(generation, supervision.mark_queued(generation.pk))  # the task handles it: nothing raised
    generation.refresh_from_db()
    assert generation.state == State.FAILED and generation.failed_step == State.PENDING
    assert generation.error == (
        "the training step ran past its time limit (4 h, CELERY_TASK_TIME_LIMIT) and was stopped; raise the "
        "limit or shorten the step, then Retry (training resumes from its last checkpoint)"
    )
    assert generation.unfinished_starts == 0
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.FAILED


def test_a_time_limit_outside_the_step_fails_the_generation_too(tiny_config, monkeypatch):
    _, generation = started_experiment(tiny_config.replace(generations=1))
    monkeypatch.setattr(pipeline, "run_step", lambda pk: (_ for _ in ()).throw(SoftTimeLimitExceeded()))
    deliver(generation, supervision.mark_queued(generation.pk))
    generation.refresh_from_db()
    assert generation.state == State.FAILED and "ran past its time limit" in generation.error


def test_the_soft_time_limit_comes_shortly_before_the_hard_one():
    assert 0 < settings.CELERY_TASK_TIME_LIMIT - settings.CELERY_TASK_SOFT_TIME_LIMIT <= 60


# --- the reconciler -------------------------------------------------------------------------------


def make(tiny_config, name, *, state=State.PENDING, status=Experiment.Status.RUNNING, progress_ago=None,
         queued_ago=None, raters="simulated", open_for_raters=False):
    experiment, generation = started_experiment(tiny_config.replace(**{"generations": 1, "rating.raters": raters}),
                                                name=name)
    now = timezone.now()
    Experiment.objects.filter(pk=experiment.pk).update(status=status)
    Generation.objects.filter(pk=generation.pk).update(
        state=state, open_for_raters=open_for_raters,
        progress_updated_at=None if progress_ago is None else now - timedelta(minutes=progress_ago),
        queued_at=None if queued_ago is None else now - timedelta(minutes=queued_ago),
    )
    return generation.pk


def test_the_reconciler_requeues_exactly_the_stalled_steps(tiny_config):
    stalled = {
        make(tiny_config, "lost before it started", queued_ago=30),
        make(tiny_config, "never queued"),
        make(tiny_config, "training, its worker gone", state=State.TRAINING, progress_ago=11, queued_ago=60),
        make(tiny_config, "sampling", state=State.SAMPLING, progress_ago=20, queued_ago=20),
        make(tiny_config, "simulated rating", state=State.RATING, progress_ago=20, queued_ago=20),
        make(tiny_config, "human rating, not yet opened", state=State.RATING, raters="human", progress_ago=20),
        make(tiny_config, "curating", state=State.CURATING, progress_ago=20, queued_ago=20),
    }
    alive = {
        make(tiny_config, "training now", state=State.TRAINING, progress_ago=1, queued_ago=60),
        make(tiny_config, "just queued", queued_ago=2),
        make(tiny_config, "open for human rating", state=State.RATING, raters="human", open_for_raters=True,
             progress_ago=600, queued_ago=600),
        make(tiny_config, "paused", status=Experiment.Status.PAUSED, state=State.TRAINING, progress_ago=60),
        make(tiny_config, "cancelled", status=Experiment.Status.CANCELLED, state=State.CANCELLED, progress_ago=60),
        make(tiny_config, "failed", status=Experiment.Status.FAILED, state=State.FAILED, progress_ago=60),
        make(tiny_config, "done", status=Experiment.Status.DONE, state=State.DONE, progress_ago=60),
    }
    taken = supervision.take_stalled(stale_after=timedelta(minutes=10))
    assert {generation_id for generation_id, _, _ in taken} == stalled
    for generation_id, state, task_id in taken:
        row = Generation.objects.get(pk=generation_id)
        assert row.queued_task_id == task_id and row.state == state  # any older message is now superseded
    assert supervision.take_stalled(stale_after=timedelta(minutes=10)) == []  # once a period, not every minute
    assert not alive & {generation_id for generation_id, _, _ in taken}


def test_a_delivery_that_starts_keeps_the_reconciler_away(tiny_config):
    generation_id = make(tiny_config, "late")
    task_id = supervision.mark_queued(generation_id)
    Generation.objects.filter(pk=generation_id).update(queued_at=timezone.now() - timedelta(minutes=30))
    assert supervision.begin_delivery(generation_id, task_id)
    assert supervision.take_stalled(stale_after=timedelta(minutes=10)) == []


def test_the_reconciler_sends_the_step_of_each_stalled_generation(tiny_config, monkeypatch):
    sent = []
    for task in set(tasks.TASK_FOR_STATE.values()):
        monkeypatch.setattr(task, "apply_async", lambda args, task_id, name=task.name: sent.append((name, args, task_id)))
    pending = make(tiny_config, "pending", queued_ago=30)
    curating = make(tiny_config, "curating", state=State.CURATING, progress_ago=30)
    assert sorted(tasks.requeue_stalled_generations(stale_seconds=600)) == sorted([pending, curating])
    assert sorted((name, args) for name, args, _ in sent) == sorted(
        [("curation.train_generation", (pending,)), ("curation.curate_generation", (curating,))])
    assert all(Generation.objects.get(pk=args[0]).queued_task_id == task_id for _, args, task_id in sent)


def test_celery_beat_runs_the_reconciler_every_minute():
    from config.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["requeue-stalled-generations"]
    assert entry["task"] == tasks.requeue_stalled_generations.name and entry["task"] in app.tasks
    assert entry["schedule"] == 60 and settings.OUROBOROS_STALL_SECONDS == 600


def test_the_demo_the_compose_file_and_the_readme_run_beat_and_compose_keeps_the_queue(monkeypatch):
    import subprocess

    import yaml

    from curation.management.commands import demo

    started = []

    class Exited:
        def __init__(self, command, **kwargs):
            started.append(command)

        def poll(self):
            return 0

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Exited)
    demo.Command()._serve("127.0.0.1:0")
    worker = next(command for command in started if "worker" in command)
    assert "-B" in worker  # the demo's one worker runs beat too

    services = yaml.safe_load((settings.BASE_DIR / "docker-compose.yml").read_text())["services"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "config", "beat"]
    assert services["beat"]["environment"]["REDIS_URL"] == services["worker-cpu"]["environment"]["REDIS_URL"]
    assert services["redis"]["command"] == ["redis-server", "--appendonly", "yes"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert "celery -A config beat" in (settings.BASE_DIR / "README.md").read_text()
