"""Thin Celery tasks: load an id, run one step of the loop, enqueue the next.

Every task is safe to run twice (the steps are idempotent) and acks late, so a task lost with its
worker is redelivered and finishes the work. Training and sampling are their own tasks so that they
can be routed to GPU workers.
"""

from __future__ import annotations

from celery import shared_task
from django.db import transaction

from curation.models import Generation

State = Generation.State


def enqueue(generation_id: int) -> None:
    """Queue the task for the generation's current step once the surrounding transaction commits."""
    state = Generation.objects.filter(pk=generation_id).values_list("state", flat=True).first()
    task = TASK_FOR_STATE.get(state)
    if task is not None:
        transaction.on_commit(lambda: task.delay(generation_id))


def _run_and_continue(generation_id: int) -> None:
    from curation import pipeline  # imported here: the web process imports this module and must not load torch

    before = Generation.objects.filter(pk=generation_id).values_list("state", flat=True).first()
    generation = pipeline.run_step(generation_id)
    if generation.state == State.DONE:
        following = generation.experiment.generations.filter(index=generation.index + 1).first()
        if following is not None:
            enqueue(following.pk)
    elif generation.state != before:
        # Unchanged means waiting: for human votes, or on a paused experiment.
        enqueue(generation_id)


@shared_task(acks_late=True, name="curation.train_generation")
def train_generation(generation_id: int) -> None:
    _run_and_continue(generation_id)


@shared_task(acks_late=True, name="curation.sample_generation")
def sample_generation(generation_id: int) -> None:
    _run_and_continue(generation_id)


@shared_task(acks_late=True, name="curation.rate_generation")
def rate_generation(generation_id: int) -> None:
    _run_and_continue(generation_id)


@shared_task(acks_late=True, name="curation.curate_generation")
def curate_generation(generation_id: int) -> None:
    _run_and_continue(generation_id)


TASK_FOR_STATE = {
    State.PENDING: train_generation,
    State.TRAINING: train_generation,
    State.SAMPLING: sample_generation,
    State.RATING: rate_generation,
    State.CURATING: curate_generation,
}


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
