"""A step that runs past CELERY_TASK_TIME_LIMIT, in a real prefork worker (the pool compose runs),
fails its generation with the reason instead of leaving it stuck; Retry resumes it."""

from __future__ import annotations

import pytest

from curation import supervision, tasks
from curation.models import Experiment, Generation
from tests.curation.factories import started_experiment
from tests.curation.test_redis_workers import finished, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_step_past_its_time_limit_fails_its_generation_with_the_reason(start_worker, tiny_config):
    # 40,000 training steps take minutes; the limit is 20 s (soft limit at 18 s).
    config = tiny_config.replace(**{"generations": 1, "train.steps": 40_000, "train.checkpoint_every": 100})
    worker = start_worker(pool="prefork", environment={"CELERY_TASK_TIME_LIMIT": "20"})
    experiment, generation = started_experiment(config)
    # Queued as tasks.enqueue queues it from a process whose CELERY_TASK_TIME_LIMIT is 20: the limits
    # travel in the message (in production web and workers share the setting).
    tasks.train_generation.apply_async((generation.pk,), task_id=supervision.mark_queued(generation.pk),
                                       time_limit=20, soft_time_limit=18)
    wait_for(lambda: finished(experiment), seconds=120, what="the time limit", workers=(worker,))
    generation.refresh_from_db()
    assert experiment.status == Experiment.Status.FAILED
    assert generation.state == Generation.State.FAILED and generation.failed_step == Generation.State.TRAINING
    assert generation.error.startswith("the training step ran past its time limit (20 s, CELERY_TASK_TIME_LIMIT)")
    assert "training step" in generation.progress_message  # it had been training, not waiting
