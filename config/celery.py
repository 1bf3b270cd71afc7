"""The Celery app. Its settings come from Django's (the CELERY_ namespace)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("ouroboros")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
