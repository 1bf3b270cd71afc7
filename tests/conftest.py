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


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3-compatible server on loopback: the one CI starts (OUROBOROS_TEST_S3_ENDPOINT), else moto's
    server in a thread of this process, a real HTTP server all the same."""
    url = os.environ.get("OUROBOROS_TEST_S3_ENDPOINT")
    if url:
        yield url
        return
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line a request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class Bucket:
    """A bucket, and the settings that put media in it."""

    def __init__(self, endpoint: str, name: str):
        import boto3

        self.endpoint, self.name = endpoint, name
        self.root = Path()  # where this test's "machines" keep their folders (set by s3_media)
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                   aws_access_key_id="test", aws_secret_access_key="test")
        self.client.create_bucket(Bucket=name)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def upload(self, folder: Path, prefix: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        def put(path: Path) -> None:
            self.client.put_object(Bucket=self.name, Key=f"{prefix}/{path.relative_to(folder).as_posix()}",
                                   Body=path.read_bytes())

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, [path for path in folder.rglob("*") if path.is_file()]))

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.name,
                                       Delete={"Objects": [{"Key": key} for key in keys[start:start + 1000]]})

    def environment(self, machine: str) -> dict:
        """The variables of a process on another machine: media in the bucket, no media folder shared."""
        return {"MEDIA_STORAGE": "s3", "MEDIA_BUCKET_URL": f"s3://{self.name}", "AWS_S3_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_S3_REGION_NAME": "us-east-1",
                "MEDIA_ROOT": str(self.root / machine / "media"), "MEDIA_CACHE_ROOT": str(self.root / machine / "cache")}


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint, django_db_setup):
    """One bucket for the session, holding the digits dataset's files (stored once, like the database's)."""
    import uuid

    bucket = Bucket(s3_endpoint, f"ouroboros-test-{uuid.uuid4().hex[:12]}")
    bucket.upload(Path(settings.MEDIA_ROOT) / "datasets", "datasets")
    return bucket


@pytest.fixture
def s3_media(s3_bucket, settings, tmp_path, monkeypatch):
    """Media in the S3 bucket (MEDIA_STORAGE=s3) for this test; what the test stored is removed after
    it. MEDIA_ROOT points at a folder that does not exist, so that nothing can quietly use the disk."""
    from botocore.config import Config

    before = set(s3_bucket.keys())
    s3_bucket.root = tmp_path / "machines"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "test")
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": s3_bucket.name, "endpoint_url": s3_bucket.endpoint, "region_name": "us-east-1",
        "file_overwrite": True, "default_acl": None,
        "client_config": Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    }}}
    settings.MEDIA_ROOT = tmp_path / "web" / "media"
    settings.MEDIA_CACHE_ROOT = tmp_path / "web" / "cache"
    yield s3_bucket
    s3_bucket.delete(sorted(set(s3_bucket.keys()) - before))
