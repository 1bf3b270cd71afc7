"""Prometheus gauges of the loop, read from the database and the broker at each scrape: queue depth
per Celery queue, generations by state, experiments by status, votes in the last hour and the raters
who cast them. (django-prometheus adds the request, response and latency metrics of this process.)"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

from django.conf import settings
from django.db.models import Count
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)


def queue_depths() -> dict[str, int]:
    """Messages waiting in each Celery queue: Redis lists, or the filesystem broker's message files.
    Empty when tasks run in process; a broker that cannot be read is logged and left out."""
    from config.celery import app

    queues = list(settings.CELERY_TASK_QUEUES)
    if app.conf.task_always_eager:
        return {}
    url = app.conf.broker_url
    try:
        if url.startswith("redis"):
            with app.connection_for_read() as connection:
                client = connection.default_channel.client
                return {queue: int(client.llen(queue)) for queue in queues}
        if url.startswith("filesystem"):
            folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
            names = [p.name for p in folder.glob("*.msg")]
            return {queue: sum(name.endswith(f".{queue}.msg") for name in names) for queue in queues}
    except Exception:
        logger.exception("could not read the queue depths from the broker")
    return {}


GAUGES = {  # name: (help, labels)
    "ouroboros_queue_depth": ("Messages waiting in a Celery queue", ["queue"]),
    "ouroboros_generations": ("Generations by state", ["state"]),
    "ouroboros_experiments": ("Experiments by status", ["status"]),
    "ouroboros_votes_last_hour": ("Votes cast in the last hour", []),
    "ouroboros_active_raters": ("Raters who voted in the last hour", []),
}


def _gauge(name: str) -> GaugeMetricFamily:
    text, labels = GAUGES[name]
    return GaugeMetricFamily(name, text, labels=labels)


def _counted(name: str, values: list[str], counts: dict) -> GaugeMetricFamily:
    gauge = _gauge(name)
    for value in values:
        gauge.add_metric([value], counts.get(value, 0))
    return gauge


class LoopCollector:
    def describe(self):
        """The metrics' names without reading anything (the registry asks at registration, before any
        database may exist)."""
        return [_gauge(name) for name in GAUGES]

    def collect(self):
        from curation.models import Experiment, Generation, VoteEvent

        depths = queue_depths()
        yield _counted("ouroboros_queue_depth", list(depths), depths)
        yield _counted("ouroboros_generations", Generation.State.values,
                       dict(Generation.objects.values_list("state").annotate(n=Count("pk"))))
        yield _counted("ouroboros_experiments", Experiment.Status.values,
                       dict(Experiment.objects.values_list("status").annotate(n=Count("pk"))))
        hour = VoteEvent.objects.filter(action=VoteEvent.Action.VOTE,
                                        created_at__gte=timezone.now() - datetime.timedelta(hours=1))
        votes, raters = _gauge("ouroboros_votes_last_hour"), _gauge("ouroboros_active_raters")
        votes.add_metric([], hour.count())
        raters.add_metric([], hour.values("rater").distinct().count())
        yield votes
        yield raters


_registered = False


def register() -> None:
    """Once per process (the app's ready() may run more than once in tests)."""
    global _registered
    if not _registered:
        from prometheus_client import REGISTRY

        REGISTRY.register(LoopCollector())
        _registered = True
