"""Which experiment, generation, step and task a log line belongs to: context variables that the
pipeline and the Celery tasks set, and a logging filter that adds them to every record, so that a
JSON log line (LOG_FORMAT=json) carries them as fields."""

from __future__ import annotations

import contextlib
import contextvars
import logging

_CONTEXT: contextvars.ContextVar[dict] = contextvars.ContextVar("ouroboros_log_context", default={})


@contextlib.contextmanager
def log_context(**fields):
    """Within the block, every log record carries `fields` (those that are not None), on top of any
    context set around it."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            setattr(record, key, value)
        return True
