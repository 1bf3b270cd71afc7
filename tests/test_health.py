"""Readiness: 200 when every part is up, 503 naming the part that is down; staff or the health token only."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from curation import health

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    client = Client()
    client.force_login(get_user_model().objects.create_user("ops", is_staff=True))
    return client


def test_ready_when_every_part_is_up_and_each_part_says_what_it_checked(staff, media_root):
    response = staff.get("/healthz/ready")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["ready"] is True and set(body["checks"]) == {"database", "broker", "media", "workers"}
    assert all(check["ok"] and check["detail"] for check in body["checks"].values())
    assert not list((media_root / "health").glob("*"))  # the probe file is gone


@pytest.mark.parametrize("part", ["database", "broker", "media", "workers"])
def test_a_part_that_is_down_makes_it_503_with_the_reason(staff, monkeypatch, part):
    def down():
        raise ConnectionError(f"{part} unreachable")

    monkeypatch.setitem(health.CHECKS, part, down)
    response = staff.get("/healthz/ready")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks[part] == {"ok": False, "detail": f"ConnectionError: {part} unreachable"}
    assert all(check["ok"] for name, check in checks.items() if name != part)


def test_the_health_token_opens_it_to_a_monitor_and_nothing_else_does(client, settings):
    assert client.get("/healthz/ready").status_code == 403
    settings.HEALTH_TOKEN = "s3cret-monitor-token"
    assert client.get("/healthz/ready", HTTP_AUTHORIZATION="Bearer s3cret-monitor-token").status_code == 200
    for wrong in ("Bearer nope", "s3cret-monitor-token", "Bearer ", "Token s3cret-monitor-token"):
        assert client.get("/healthz/ready", HTTP_AUTHORIZATION=wrong).status_code == 403, wrong
    settings.HEALTH_TOKEN = ""
    assert client.get("/healthz/ready", HTTP_AUTHORIZATION="Bearer ").status_code == 403


def test_a_staff_api_token_opens_readiness_and_metrics_and_a_raters_does_not(client, django_user_model):
    from knox.models import AuthToken

    staff = django_user_model.objects.create_user("boss", password="staff password 1", is_staff=True)
    rater = django_user_model.objects.create_user("rita", password="rater password 1")
    staff_key, rater_key = AuthToken.objects.create(staff)[1], AuthToken.objects.create(rater)[1]
    for path in ("/healthz/ready", "/metrics"):
        assert client.get(path, HTTP_AUTHORIZATION=f"Token {staff_key}").status_code in (200, 503), path
        assert client.get(path, HTTP_AUTHORIZATION=f"Token {rater_key}").status_code == 403, path
        assert client.get(path, HTTP_AUTHORIZATION="Token not-a-key").status_code == 403, path


def test_a_real_broker_without_workers_is_not_ready(staff, settings):
    """With the Celery app sending to its broker (not running tasks in process): the broker answers,
    and with a Redis broker, no worker answers the ping (the real-worker case: test_redis_workers)."""
    from config.celery import app

    app.conf.task_always_eager = False
    try:
        response = staff.get("/healthz/ready")
    finally:
        app.conf.task_always_eager = True
    checks = response.json()["checks"]
    assert checks["broker"]["ok"], checks["broker"]
    if settings.CELERY_BROKER_URL.startswith("redis"):
        assert response.status_code == 503 and "no Celery worker answered" in checks["workers"]["detail"]
    else:
        assert response.status_code == 200 and "not checked" in checks["workers"]["detail"]
