"""The Celery app. Its settings come from Django's (the CELERY_ namespace)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("ouroboros")
# The default in every thread, not only this one: request threads (runserver, gunicorn threads,
# a test's live server) must enqueue through this app, not Celery's unconfigured fallback.
app.set_default()
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
