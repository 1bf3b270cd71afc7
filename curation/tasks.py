"""Thin Celery tasks: load an id, run one step of the loop, enqueue the next.

Every task is safe to run twice (the steps are idempotent) and acks late, so a task lost with its
worker is redelivered and finishes the work; `curation.supervision` drops superseded messages, bounds
the redeliveries of a step that keeps killing its worker, and (every minute, from Celery beat)
re-queues a step whose message was lost. Training and sampling are their own tasks so that they can
be routed to GPU workers.
"""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction

from curation import supervision
from curation.log_context import log_context
from curation.models import Generation

State = Generation.State


def enqueue(generation_id: int) -> None:
    """Queue the task for the generation's current step once the surrounding transaction commits."""
    state = Generation.objects.filter(pk=generation_id).values_list("state", flat=True).first()
    task = TASK_FOR_STATE.get(state)
    if task is not None:
        task_id = supervision.mark_queued(generation_id)
        transaction.on_commit(lambda: task.apply_async((generation_id,), task_id=task_id))


def queue_export(export) -> None:
    """Save a new export (from the page or the API) and queue its task once the row is committed: a
    worker taking it earlier would not find it."""
    with transaction.atomic():
        export.save()
        transaction.on_commit(lambda: export_dataset.delay(export.pk))


def _run_and_continue(task, generation_id: int) -> None:
    with log_context(task_id=task.request.id, task=task.name):
        _run_delivered(task, generation_id)


def _run_delivered(task, generation_id: int) -> None:
    from curation import pipeline  # imported here: the web process imports this module and must not load torch

    if not supervision.begin_delivery(generation_id, task.request.id):
        return  # superseded by a newer message, or given up after its worker died too often
    try:
        before = Generation.objects.filter(pk=generation_id).values_list("state", flat=True).first()
        generation = pipeline.run_step(generation_id)
        if generation.state == State.DONE:
            following = generation.experiment.generations.filter(index=generation.index + 1).first()
            if following is not None:
                enqueue(following.pk)
        elif generation.state != before:
            # Unchanged means waiting: for human votes, or on a paused experiment.
            enqueue(generation_id)
    except SoftTimeLimitExceeded as error:
        # Near CELERY_TASK_TIME_LIMIT: fail the generation with the reason before the worker is killed
        # (run_step has done so already unless the limit struck outside the step itself).
        generation = Generation.objects.select_related("experiment").get(pk=generation_id)
        if generation.state in supervision.ACTIVE:
            supervision.fail_generation(generation, error)
    except Exception:
        supervision.end_delivery(generation_id)
        raise
    # Not reached when the worker dies mid-step: the start then counts against the step.
    supervision.end_delivery(generation_id)


@shared_task(bind=True, acks_late=True, name="curation.train_generation")
def train_generation(self, generation_id: int) -> None:
    _run_and_continue(self, generation_id)


@shared_task(bind=True, acks_late=True, name="curation.sample_generation")
def sample_generation(self, generation_id: int) -> None:
    _run_and_continue(self, generation_id)


@shared_task(bind=True, acks_late=True, name="curation.rate_generation")
def rate_generation(self, generation_id: int) -> None:
    _run_and_continue(self, generation_id)


@shared_task(bind=True, acks_late=True, name="curation.curate_generation")
def curate_generation(self, generation_id: int) -> None:
    _run_and_continue(self, generation_id)


TASK_FOR_STATE = {
    State.PENDING: train_generation,
    State.TRAINING: train_generation,
    State.SAMPLING: sample_generation,
    State.RATING: rate_generation,
    State.CURATING: curate_generation,
}


@shared_task(name="curation.requeue_stalled_generations")
def requeue_stalled_generations(stale_seconds: float | None = None) -> list[int]:
    """Celery beat runs this every OUROBOROS_RECONCILE_SECONDS: queue again each step with no progress
    and no message queued for OUROBOROS_STALL_SECONDS (its message lost, e.g. with a Redis restart)."""
    stale_after = timedelta(seconds=settings.OUROBOROS_STALL_SECONDS if stale_seconds is None else stale_seconds)
    taken = supervision.take_stalled(stale_after=stale_after)
    for generation_id, state, task_id in taken:
        TASK_FOR_STATE[state].apply_async((generation_id,), task_id=task_id)
    return [generation_id for generation_id, _, _ in taken]


@shared_task(acks_late=True, name="curation.reorder_rating_queue")
def reorder_rating_queue(generation_id: int) -> None:
    from curation import pipeline  # imported here: the web process imports this module and must not load torch

    generation = Generation.objects.filter(pk=generation_id, state=State.RATING).first()
    if generation is not None:
        pipeline.reorder_rating_queue(generation)


@shared_task(acks_late=True, name="curation.export_dataset")
def export_dataset(export_id: int) -> None:
    from curation.exports import run_export

    run_export(export_id)
