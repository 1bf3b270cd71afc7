"""docker-compose.yml cannot run here (no Docker engine); check that it is well-formed and wired."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_defines_the_stack_and_wires_it_to_the_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "web", "worker-cpu", "worker-gpu"} <= set(services)
    for name in ("web", "worker-cpu", "worker-gpu", "migrate"):
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgres://")
        assert environment["REDIS_URL"].startswith("redis://redis:")
        assert environment["DEBUG"] == "0" and environment["SECRET_KEY"].startswith("${SECRET_KEY:?")
        # media in the MinIO bucket: no folder shared, so that a worker may run on another machine
        assert environment["MEDIA_STORAGE"] == "s3" and environment["MEDIA_BUCKET_URL"] == "s3://ouroboros-media"
        assert environment["AWS_S3_ENDPOINT_URL"] == "http://minio:9000" and "volumes" not in services[name]
    for name in ("web", "worker-cpu", "worker-gpu"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "healthcheck" in services[name]
    assert services["web"]["command"][0] == "gunicorn" and "/healthz/" in services["web"]["healthcheck"]["test"][-1]
    cpu, gpu = services["worker-cpu"], services["worker-gpu"]
    assert cpu["command"][:4] == ["celery", "-A", "config", "worker"]
    assert cpu["command"][cpu["command"].index("-Q") + 1] == "${CPU_WORKER_QUEUES:-default,gpu}"
    assert gpu["command"][gpu["command"].index("-Q") + 1] == "gpu"
    assert gpu["profiles"] == ["gpu"] and gpu["environment"]["OUROBOROS_DEVICE"] == "cuda"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "cu128" in gpu["build"]["args"]["TORCH_INDEX"]
    assert {"postgres-data", "minio-data"} <= set(compose["volumes"])
    for name in ("postgres", "redis", "minio"):
        assert "healthcheck" in services[name]
    # the bucket exists before the migration, which every app service waits for
    assert services["migrate"]["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
    bucket = services["minio-bucket"]
    assert "mc mb --ignore-existing media/ouroboros-media" in bucket["command"][0]
    assert bucket["environment"] == services["minio"]["environment"]
    assert services["web"]["environment"]["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]


def test_compose_turns_https_on_unless_told_otherwise_and_shares_the_throttle_cache():
    environment = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["web"]["environment"]
    assert environment["HTTPS"] == "${HTTPS:-1}"
    assert environment["CACHE_URL"].startswith("redis://redis:") and environment["CACHE_URL"] != environment["REDIS_URL"]
    assert environment["TRUSTED_PROXY_COUNT"] == "${TRUSTED_PROXY_COUNT:-0}"


def test_the_image_installs_the_cpu_torch_by_default_and_builds_static_files():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in dockerfile
    assert "\"$(grep '^torch==' requirements.txt)\"" in dockerfile and "collectstatic" in dockerfile
    assert "pip install --no-cache-dir --require-hashes --no-deps -r requirements-deploy.lock" in dockerfile
    assert ".venv" in (ROOT / ".dockerignore").read_text().split()


def compose_command():
    """`docker compose` (v2) or `docker-compose` (v1), whichever this machine has; None if neither."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_compose_validates_the_file_and_requires_a_secret_key():
    command = compose_command()
    if command is None:
        pytest.skip("no docker compose client here (the structure is checked above)")
    env = {**os.environ, "SECRET_KEY": "x" * 50}
    for profile in ([], ["--profile", "gpu"]):
        result = subprocess.run([*command, *profile, "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    env.pop("SECRET_KEY")
    result = subprocess.run([*command, "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "set SECRET_KEY" in result.stderr
