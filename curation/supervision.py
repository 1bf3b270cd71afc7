"""Keeping every generation's step moving: one live message per step, a bound on redeliveries of a
step whose worker keeps dying, and the reconciler that re-queues a step whose message was lost.

Every step is idempotent (`curation.pipeline`), so running one again never doubles its results; what
this module prevents is running it needlessly, or never again. Each queued message carries an id
recorded on the generation: a message that a newer one superseded is dropped when it arrives, and a
delivery that starts records the start, so the reconciler sees the step alive and does not re-queue
it. (No torch here: the web process enqueues through this module.)
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from curation import tracking
from curation.models import Experiment, Generation

logger = logging.getLogger(__name__)
State = Generation.State
# The states whose step a task carries out; human rating waits for people, not for a task.
ACTIVE = (State.PENDING, State.TRAINING, State.SAMPLING, State.RATING, State.CURATING)


class StepAbandoned(Exception):
    """A step whose deliveries kept dying with their worker."""


def step_of(state: str) -> str:
    """The step a generation in this state is in: a pending generation's is training."""
    return State.TRAINING if state == State.PENDING else state


def mark_queued(generation_id: int) -> str:
    """A new message id for the generation's current step, recorded (in the caller's transaction) as
    the one to run: any message queued for it before is dropped when it arrives."""
    task_id = str(uuid.uuid4())
    Generation.objects.filter(pk=generation_id).update(queued_task_id=task_id, queued_at=timezone.now())
    return task_id


def begin_delivery(generation_id: int, task_id: str | None) -> bool:
    """Whether this delivery of a step's message should run the step. Not when a newer message
    superseded it; not when the step has already been started `OUROBOROS_STEP_MAX_STARTS` times and
    never returned (each time its worker died: killed for memory, or at the hard time limit), in which
    case the generation fails with the reason instead of killing another worker. `task_id` is None
    when the task is called directly rather than from a message."""
    row = Generation.objects.filter(pk=generation_id).values("state", "queued_task_id").first()
    if row is None or row["state"] not in ACTIVE:
        return True  # nothing to count: the step itself sees there is nothing to do
    step = step_of(row["state"])
    # One conditional write, so that the reconciler (which takes only a step with no recent
    # progress) and a newer message (which changes queued_task_id) cannot both run it.
    claim = Generation.objects.filter(pk=generation_id, state=row["state"])
    if task_id is not None:
        claim = claim.filter(Q(queued_task_id=task_id) | Q(queued_task_id=""))
    claimed = claim.update(
        unfinished_starts=Case(When(started_step=step, then=F("unfinished_starts") + 1), default=Value(1)),
        started_step=step,
        progress_updated_at=timezone.now(),
    )
    if not claimed:
        logger.info("generation %s: dropped a superseded message for its %s step", generation_id, step)
        return False
    starts = Generation.objects.filter(pk=generation_id).values_list("unfinished_starts", flat=True).get()
    limit = settings.OUROBOROS_STEP_MAX_STARTS
    if starts <= limit:
        return True
    generation = Generation.objects.select_related("experiment").get(pk=generation_id)
    fail_generation(generation, StepAbandoned(
        f"the {step} step was started {limit} times and its worker died each time (killed for memory, "
        "or at the time limit); see the worker logs; Retry runs it again"
    ))
    Generation.objects.filter(pk=generation_id).update(unfinished_starts=0)
    return False


def end_delivery(generation_id: int) -> None:
    """The step returned (done, failed, paused or waiting): its starts no longer count against it."""
    Generation.objects.filter(pk=generation_id).update(unfinished_starts=0)


def take_stalled(*, stale_after: timedelta) -> list[tuple[int, str, str]]:
    """Generations of running experiments whose step has had no progress and no message queued for
    `stale_after`: (id, state, new message id) for each, already marked queued, for the caller to
    send. Not generations open for human rating (they wait for people), nor paused or cancelled ones."""
    now = timezone.now()
    cutoff = now - stale_after
    stalled = (
        Q(state__in=ACTIVE, experiment__status=Experiment.Status.RUNNING)
        & (Q(progress_updated_at__isnull=True) | Q(progress_updated_at__lt=cutoff))
        & (Q(queued_at__isnull=True) | Q(queued_at__lt=cutoff))
        & ~Q(state=State.RATING, open_for_raters=True)
    )
    taken = []
    for generation_id, state in Generation.objects.filter(stalled).values_list("pk", "state"):
        task_id = str(uuid.uuid4())
        # Taken only if still stalled: a delivery that started since has written its progress.
        if Generation.objects.filter(stalled, pk=generation_id, state=state).update(queued_task_id=task_id, queued_at=now):
            logger.warning("generation %s: its %s step has had no progress and no message queued for %s; "
                           "queuing it again", generation_id, step_of(state), stale_after)
            taken.append((generation_id, state, task_id))
    return taken


def fail_generation(generation: Generation, error: Exception) -> None:
    """Mark the generation and its experiment failed, with the reason and the step Retry resumes."""
    message = str(error) or error.__class__.__name__
    if isinstance(error, SoftTimeLimitExceeded):
        step = State.TRAINING if generation.state == State.PENDING else generation.state
        limit = settings.CELERY_TASK_TIME_LIMIT
        limit_text = " ".join(f"{n} {unit}" for n, unit in ((limit // 3600, "h"), (limit % 3600 // 60, "min"), (limit % 60, "s")) if n)
        message = (
            f"the {step} step ran past its time limit ({limit_text}, CELERY_TASK_TIME_LIMIT) and was stopped; "
            "raise the limit or shorten the step, then Retry (training resumes from its last checkpoint)"
        )
    logger.error("generation %s failed in %s", generation, generation.state, exc_info=error)
    with transaction.atomic():
        Generation.objects.filter(pk=generation.pk).update(
            state=State.FAILED, failed_step=generation.state, error=message[:2000]
        )
        Experiment.objects.filter(pk=generation.experiment_id).update(status=Experiment.Status.FAILED)
    tracking.generation_failed(generation)
