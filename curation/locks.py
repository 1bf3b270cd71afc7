"""Locks that hold across every process sharing the database, on whichever machine it runs.

On PostgreSQL a session-level advisory lock (workers on many machines); on SQLite, which only one
machine can share, a lock file beside the database."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

from training.files import exclusive


@contextmanager
def held(name: str):
    """Hold the lock called `name` for the block: a second holder waits until the first is done."""
    if connection.vendor != "postgresql":
        with exclusive(Path(settings.VAR_DIR) / "locks" / f"{_key(name)}.lock"):
            yield
        return
    key = _key(name)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def _key(name: str) -> int:
    """A signed 64-bit key for the lock name (PostgreSQL's advisory lock key)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
