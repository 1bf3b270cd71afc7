"""docker-compose.yml cannot run here (no Docker engine); check that it is well-formed and wired."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_defines_the_stack_and_wires_it_to_the_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "web", "worker"} <= set(services)
    for name in ("web", "worker", "migrate"):
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgres://")
        assert environment["REDIS_URL"].startswith("redis://redis:")
        assert "media:/data/media" in services[name]["volumes"]
    assert services["worker"]["command"][:3] == ["celery", "-A", "config"]
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert {"postgres-data", "media"} <= set(compose["volumes"])
    for name in ("postgres", "redis"):
        assert "healthcheck" in services[name]
