"""/metrics for Prometheus: the loop's gauges read at each scrape, for staff or the health token only."""

import re

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.test import Client

from curation.models import Generation
from curation.rating import cast
from tests.curation.factories import human_rater, open_generation

pytestmark = pytest.mark.django_db


def value(text: str, metric: str) -> float:
    found = re.search(rf"^{re.escape(metric)} ([0-9.e+]+)$", text, re.M)
    assert found, f"{metric} not in the metrics"
    return float(found.group(1))


def test_the_loops_gauges_count_generations_votes_and_raters(tiny_config):
    generation = open_generation(tiny_config, samples=4, votes_needed=2)
    rater = human_rater("ann")
    client = Client()
    client.force_login(rater.user)
    items = client.get("/rate/api/next?count=2").json()["items"]
    for n, item in enumerate(items):
        cast(rater=rater, token=item["token"], up=True, request_id=f"m-{n:06d}")
    staff = Client()
    staff.force_login(get_user_model().objects.create_user("ops", is_staff=True))
    text = staff.get("/metrics").content.decode()
    assert value(text, 'ouroboros_generations{state="rating"}') == Generation.objects.filter(state="rating").count() >= 1
    assert value(text, 'ouroboros_generations{state="failed"}') == 0
    assert value(text, 'ouroboros_experiments{status="running"}') >= 1
    assert value(text, "ouroboros_votes_last_hour") == 2 and value(text, "ouroboros_active_raters") == 1
    assert "django_http_requests_total_by_method_total" in text  # django-prometheus's own
    assert generation.pk


def test_only_staff_or_the_health_token_read_the_metrics(client, settings):
    assert client.get("/metrics").status_code == 403
    settings.HEALTH_TOKEN = "scrape-token-123"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-123").status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403


@pytest.mark.skipif(not django_settings.CELERY_BROKER_URL.startswith("redis"), reason="needs REDIS_URL")
def test_queue_depth_counts_the_messages_waiting_in_redis(admin_client):
    from config.celery import app

    app.conf.task_always_eager = False
    try:
        app.control.purge()
        app.send_task("curation.train_generation", args=[0], queue="gpu")
        app.send_task("curation.curate_generation", args=[0], queue="default")
        app.send_task("curation.curate_generation", args=[0], queue="default")
        text = admin_client.get("/metrics").content.decode()
        assert value(text, 'ouroboros_queue_depth{queue="gpu"}') == 1
        assert value(text, 'ouroboros_queue_depth{queue="default"}') == 2
    finally:
        app.control.purge()
        app.conf.task_always_eager = True
