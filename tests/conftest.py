"""Shared fixtures: a private media folder, the digits dataset stored once, Celery in-process."""

from __future__ import annotations

import pytest
from django.conf import settings

from curation.ml.experiment_config import preset


@pytest.fixture(scope="session", autouse=True)
def media_root(tmp_path_factory):
    path = tmp_path_factory.mktemp("media")
    settings.MEDIA_ROOT = path
    return path


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker, media_root):
    """The digits dataset and its reference models, stored once for the whole session."""
    from curation.datasets import ensure_digits_dataset, real_models

    with django_db_blocker.unblock():
        dataset = ensure_digits_dataset()
        real_models(dataset.pk)


@pytest.fixture(autouse=True)
def fresh_experiment_media(media_root):
    """Experiment files are keyed by database ids, which a rolled-back test hands out again: clear
    them after each test so that no test finds another's checkpoint."""
    import shutil

    yield
    shutil.rmtree(media_root / "experiments", ignore_errors=True)


@pytest.fixture(autouse=True)
def celery_in_process():
    """Tasks run in the calling process unless a test is about the broker."""
    from config.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def tiny_config():
    """A configuration that runs a generation in a few seconds."""
    return preset("digits-tiny")
