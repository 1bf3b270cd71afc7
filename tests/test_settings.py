"""Settings from the environment: the embedded default with nothing set, a production mode that
passes Django's deployment checks, Celery's queues, and stored files for staff alone."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What the test session itself may have set (the browser tests allow sync ORM calls in async code).
CLEARED = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DEBUG", "SECRET_KEY", "MEDIA_ROOT", "DJANGO_ALLOW_ASYNC_UNSAFE",
           "MEDIA_STORAGE", "MEDIA_BUCKET_URL", "AWS_S3_ENDPOINT_URL")
PRODUCTION = {"DEBUG": "0", "SECRET_KEY": "k3y-" + "x7Qp9vLm2RtZ" * 5, "ALLOWED_HOSTS": "ouroboros.example.org"}


def run(code_or_args, **environment):
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(environment)
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.embedded
def test_with_nothing_set_the_embedded_default_runs_sqlite_and_the_filesystem_broker():
    result = run("import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; django.setup();"
                 "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.DEBUG)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", "filesystem://", "True"]


def test_the_services_come_from_the_environment():
    result = run("import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; django.setup();"
                 "from django.conf import settings as s; d = s.DATABASES['default'];"
                 "print(d['ENGINE'], d['HOST'], d['NAME'], s.CELERY_BROKER_URL, s.MEDIA_ROOT)",
                 DATABASE_URL="postgres://u:p@db.internal:5432/loops", REDIS_URL="redis://queue.internal:6379/2",
                 MEDIA_ROOT="/srv/media")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "db.internal", "loops",
                                     "redis://queue.internal:6379/2", "/srv/media"]


def test_media_in_a_bucket_comes_from_the_environment_and_a_wrong_setting_says_what_to_set():
    show = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; django.setup();"
            "from django.core.files.storage import storages; d = storages['default'];"
            "print(type(d).__name__, getattr(d, 'bucket_name', ''), getattr(d, 'location', ''), getattr(d, 'endpoint_url', ''),"
            "     getattr(d, 'client_config', None) and d.client_config.s3['addressing_style'], d.file_overwrite if"
            "     hasattr(d, 'file_overwrite') else '', sep='|')")
    result = run(show, MEDIA_STORAGE="s3", MEDIA_BUCKET_URL="s3://lab-media/ouroboros/prod",
                 AWS_S3_ENDPOINT_URL="http://minio.internal:9000")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split("|") == ["S3Storage", "lab-media", "ouroboros/prod", "http://minio.internal:9000",
                                                 "path", "True"]
    result = run(show, MEDIA_STORAGE="s3", MEDIA_BUCKET_URL="s3://lab-media")  # Amazon's S3 itself
    assert result.stdout.strip().split("|")[1:5] == ["lab-media", "", "None", "auto"]
    result = run(show)
    assert result.stdout.strip().split("|")[0] == "MediaStorage"

    for environment, message in (({"MEDIA_STORAGE": "s3"}, "MEDIA_STORAGE=s3 needs MEDIA_BUCKET_URL=s3://BUCKET"),
                                 ({"MEDIA_STORAGE": "s3", "MEDIA_BUCKET_URL": "https://lab-media"}, "needs MEDIA_BUCKET_URL"),
                                 ({"MEDIA_STORAGE": "ftp"}, "MEDIA_STORAGE must be filesystem or s3, not 'ftp'")):
        result = run(["manage.py", "check"], **environment)
        assert result.returncode != 0 and message in result.stderr, result.stderr


def test_production_mode_passes_the_deployment_checks_without_a_warning():
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_mode_refuses_the_embedded_secret_key_and_says_how_to_make_one():
    result = run(["manage.py", "check"], **{**PRODUCTION, "SECRET_KEY": ""})
    assert result.returncode != 0
    assert "needs a SECRET_KEY of 50+ random characters" in result.stderr and "secrets.token_urlsafe" in result.stderr


def test_training_and_sampling_go_to_the_gpu_queue_the_rest_to_default():
    from config.celery import app

    def queue(task):
        return app.amqp.router.route({}, task)["queue"].name

    assert queue("curation.train_generation") == queue("curation.sample_generation") == "gpu"
    for task in ("curation.rate_generation", "curation.curate_generation", "curation.export_dataset",
                 "curation.reorder_rating_queue"):
        assert queue(task) == "default"
    assert set(app.amqp.queues) == {"default", "gpu"}  # a worker without -Q takes both


@pytest.mark.django_db
def test_stored_files_are_for_staff_alone(client, settings, media_root):
    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    for relative in ("experiments/1/grid.png", "exports/1/export.zip"):
        (media_root / relative).parent.mkdir(parents=True, exist_ok=True)
        (media_root / relative).write_bytes(b"stored")
    assert client.get("/media/experiments/1/grid.png").status_code == 403
    rater = get_user_model().objects.create_user("rater", password="rater password 1")
    _, token = AuthToken.objects.create(user=rater)
    assert client.get("/media/experiments/1/grid.png", HTTP_AUTHORIZATION=f"Token {token}").status_code == 403
    assert client.get("/media/experiments/1/grid.png", HTTP_AUTHORIZATION="Token wrong").status_code == 403
    client.force_login(rater)
    assert client.get("/media/experiments/1/grid.png").status_code == 403
    assert client.get("/media/exports/1/export.zip").status_code == 403
    assert client.get("/media/./exports/1/export.zip").status_code == 403
    assert client.get("/media/../config/settings.py").status_code == 404
    rater.is_staff = True
    rater.save()
    response = client.get("/media/experiments/1/grid.png")
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"stored"
    assert client.get("/media/exports/1/export.zip").status_code == 200


@pytest.mark.django_db
def test_the_health_check_answers_when_the_database_does(client):
    response = client.get("/healthz/")
    assert response.status_code == 200 and response.content == b"ok"


def test_a_command_on_a_database_not_yet_set_up_says_to_migrate(tmp_path):
    result = run(["manage.py", "export", "--experiment", "1", "--format", "manifest", "--output", str(tmp_path / "x")],
                 OUROBOROS_VAR_DIR=str(tmp_path))
    assert result.returncode == 1
    assert "the database is not set up" in result.stderr and "Run `python manage.py migrate` first" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x").exists()
