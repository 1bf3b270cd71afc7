"""Readiness: whether this deployment can take work, part by part, for a load balancer or an operator.

Each check answers (ok, detail) within a couple of seconds: the database answers a query; the broker
accepts a connection; media storage takes a file and gives it back; at least one Celery worker
answers a ping. Liveness (`/healthz/`) stays the database alone and public; readiness names the
infrastructure, so it is for staff (a session or an API token) or a holder of the health token.
"""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection

from curation.authentication import session_or_token_user

BROKER_TIMEOUT = 2.0
PING_TIMEOUT = 1.0


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return f"{connection.vendor} answers"


def check_broker() -> str:
    from config.celery import app

    if app.conf.task_always_eager:
        return "none: tasks run in the web process (CELERY_TASK_ALWAYS_EAGER)"
    with app.connection_for_write() as broker:
        broker.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT)
    return f"{app.conf.broker_url.split('://')[0]} accepts connections"


def check_media() -> str:
    name = default_storage.save(f"health/{uuid.uuid4().hex}.txt", ContentFile(b"ok"))
    try:
        with default_storage.open(name) as handle:
            if handle.read() != b"ok":
                raise OSError("media storage gave back other bytes than it was given")
    finally:
        default_storage.delete(name)
    return f"{type(default_storage).__name__} writes and reads"


def check_workers() -> str:
    from config.celery import app

    if app.conf.task_always_eager:
        return "none needed: tasks run in the web process"
    if app.conf.broker_url.startswith("filesystem"):
        return "not checked: the filesystem broker carries no pings (embedded set-up)"
    replies = app.control.ping(timeout=PING_TIMEOUT)
    if not replies:
        raise RuntimeError(f"no Celery worker answered a ping within {PING_TIMEOUT:g} s: start one "
                           "(celery -A config worker) or check that it reaches the broker")
    names = sorted(name for reply in replies for name in reply)
    return f"{len(names)} worker(s) answer: {', '.join(names)}"


CHECKS = {"database": check_database, "broker": check_broker, "media": check_media, "workers": check_workers}


def readiness() -> tuple[bool, dict]:
    """Every check's result; ready when all pass. A check that raises is down, with its reason."""
    results = {}
    for name, check in CHECKS.items():
        try:
            results[name] = {"ok": True, "detail": check()}
        except Exception as error:  # any failure is this part being down, said in words
            results[name] = {"ok": False, "detail": f"{type(error).__name__}: {error}"}
    return all(r["ok"] for r in results.values()), results


REFUSED = "for staff (a session or an API token) or a holder of the health token (Authorization: Bearer <HEALTH_TOKEN>)"


def may_see(request) -> bool:
    """Staff, or a request carrying the health token (HEALTH_TOKEN) as `Authorization: Bearer <token>`."""
    if session_or_token_user(request).is_staff:
        return True
    token = settings.HEALTH_TOKEN
    header = request.headers.get("Authorization", "")
    return bool(token) and header.startswith("Bearer ") and secrets.compare_digest(header[7:].strip(), token)
