"""Shared fixtures: a private media folder, the digits dataset stored once, Celery in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    """Experiment, export and imported-dataset files are keyed by database ids, which a rolled-back
    test hands out again: clear them after each test so that no test finds another's files."""
    import shutil

    datasets = media_root / "datasets"
    before = set(datasets.iterdir()) if datasets.exists() else set()
    yield
    shutil.rmtree(media_root / "experiments", ignore_errors=True)
    shutil.rmtree(media_root / "exports", ignore_errors=True)
    for folder in (set(datasets.iterdir()) if datasets.exists() else set()) - before - {datasets / "real-models"}:
        # imported in this test (the fitted real models are stored by content: they stay valid)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def fresh_cache():
    """Throttle counts (DRF keeps them in the cache) start from zero in every test: a test that asks
    for API tokens is never refused for another test's requests."""
    from django.core.cache import cache

    cache.clear()


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


ROOT = Path(__file__).resolve().parents[1]


def database_url() -> str:
    """The test database as a URL, for worker processes."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def start_worker(media_root):
    """Start real `celery worker` processes on the test database and broker (use with transactional
    tests); each is killed when the test ends. `queues` picks queues as a worker's -Q flag does; `pool`
    "prefork" (one child) where time limits matter: the solo pool enforces none."""
    from config.celery import app

    app.conf.task_always_eager = False
    app.control.purge()  # messages left by an earlier, interrupted run
    if settings.CELERY_BROKER_URL == "filesystem://":
        for stale in Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]).glob("*"):
            stale.unlink()
    processes = []

    def start(*, queues: str = "", name: str = "", environment: dict | None = None, pool: str = "solo") -> subprocess.Popen:
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "MEDIA_ROOT": str(media_root),
            "OUROBOROS_VAR_DIR": str(settings.VAR_DIR),
            # One thread: the worker shares the machine with the test process (and, for browser tests,
            # the live server and Chromium); oversubscribed torch threads slow training tenfold.
            "OUROBOROS_TORCH_THREADS": "1",
            **(environment or {}),
        }
        env.pop("CELERY_TASK_ALWAYS_EAGER", None)
        command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", pool, "--loglevel", "WARNING"]
        command += ["--concurrency", "1"] if pool == "prefork" else []
        command += ["-Q", queues] if queues else []
        command += ["--hostname", f"{name}@%h"] if name else []
        process = subprocess.Popen(command, cwd=ROOT, env=env)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait()
    app.control.purge()


@pytest.fixture
def worker(start_worker):
    """One real worker on every queue."""
    return start_worker()
