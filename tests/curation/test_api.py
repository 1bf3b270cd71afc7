"""The REST API: token auth, read for raters, write for staff, votes, exports; fuzzed with schemathesis."""

from __future__ import annotations

import io
import zipfile

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, settings
from rest_framework.test import APIClient

from curation.exports import run_export
from curation.models import Experiment, Export, Vote
from curation.services import create_experiment

from .factories import human_rater, open_generation

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    user = get_user_model().objects.create_user("chief", password="chief password", is_staff=True)
    client = APIClient()
    token = client.post("/api/token/", {"username": "chief", "password": "chief password"}).json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    client.user = user
    return client


@pytest.fixture
def rater_client():
    rater = human_rater("rita")
    client = APIClient()
    client.force_authenticate(rater.user)
    client.rater = rater
    return client


def test_strangers_get_nothing():
    assert APIClient().get("/api/experiments/").status_code == 401
    assert APIClient().post("/api/token/", {"username": "x", "password": "y"}).status_code == 400


def test_staff_create_experiments_and_bad_settings_are_explained(staff):
    response = staff.post("/api/experiments/", {"name": "api loop", "preset": "digits-tiny",
                                               "settings": {"mix.loop": "fresh", "generations": 2}}, format="json")
    assert response.status_code == 201, response.content
    experiment = Experiment.objects.get(pk=response.json()["id"])
    assert experiment.loop_config.mix.loop == "fresh" and response.json()["status"] == "draft"
    bad = staff.post("/api/experiments/", {"name": "bad", "preset": "digits-tiny",
                                          "settings": {"mix.loop": "fully-synthetic"}}, format="json")
    assert bad.status_code == 400 and "fully-synthetic loop trains on no real data" in bad.json()["settings"][0]
    levers = staff.post("/api/experiments/", {"name": "levers", "preset": "digits-tiny", "settings": {
        "mix.keep_real": True, "mix.synthetic_ratio": 0.5, "train.warm_ema": True, "curation.acceptance": "resample"}},
        format="json")
    assert levers.status_code == 201, levers.content
    config = Experiment.objects.get(pk=levers.json()["id"]).loop_config
    assert config.mix.keep_real and config.mix.synthetic_ratio == 0.5 and config.curation.acceptance == "resample"
    unknown = staff.post("/api/experiments/", {"name": "bad", "settings": {"mix.colour": 1}}, format="json")
    assert unknown.status_code == 400 and "unknown setting 'mix.colour'" in unknown.json()["settings"][0]
    assert Experiment.objects.count() == 2


def test_actions_through_the_api_and_refusals(staff, tiny_config, monkeypatch):
    monkeypatch.setattr("curation.tasks.enqueue", lambda pk: None)
    experiment = create_experiment(name="acted", config=tiny_config)
    refused = staff.post(f"/api/experiments/{experiment.pk}/actions/pause/")
    assert refused.status_code == 409 and "it is draft" in refused.json()["detail"]
    started = staff.post(f"/api/experiments/{experiment.pk}/actions/start/")
    assert started.status_code == 200 and started.json()["status"] == "running"
    assert staff.post(f"/api/experiments/{experiment.pk}/actions/explode/").status_code == 404
    generations = staff.get("/api/generations/", {"experiment": experiment.pk}).json()["results"]
    assert [g["state"] for g in generations] == ["pending"]


def test_raters_neither_read_nor_write_experiments_samples_or_exports(rater_client, tiny_config):
    experiment = create_experiment(name="hidden", config=tiny_config)
    export = Export.objects.create(experiment=experiment, format="hf", status="done", file="exports/1/curated.zip")
    for path in (f"/api/experiments/{experiment.pk}/", "/api/generations/", "/api/samples/",
                 f"/api/samples/?source=real&experiment={experiment.pk}", "/api/exports/",
                 f"/api/exports/{export.pk}/download/"):
        response = rater_client.get(path)
        assert response.status_code == 403 and "hidden" not in response.content.decode(), path
    assert rater_client.post("/api/experiments/", {"name": "nope"}, format="json").status_code == 403
    assert rater_client.post(f"/api/experiments/{experiment.pk}/actions/start/").status_code == 403
    assert rater_client.post("/api/exports/", {"experiment": experiment.pk, "format": "hf"}).status_code == 403


def test_raters_vote_through_the_api_by_token_and_replays_count_once(rater_client, staff, tiny_config):
    generation = open_generation(tiny_config, samples=4, votes_needed=2)
    queue = rater_client.get("/api/votes/queue/?count=2")
    assert queue.status_code == 200 and len(queue.json()) == 2
    token = queue.json()[0]["token"]
    first = rater_client.post("/api/votes/", {"token": token, "up": True, "request_id": "req-00001"}, format="json")
    again = rater_client.post("/api/votes/", {"token": token, "up": True, "request_id": "req-00001"}, format="json")
    assert first.status_code == again.status_code == 200 and Vote.objects.count() == 1
    changed = rater_client.post("/api/votes/", {"token": token, "up": False, "request_id": "req-00002"}, format="json")
    assert changed.status_code == 200 and Vote.objects.get().up is False
    # Listing votes is staff's: a rater's own list would tell their samples from the gold items.
    assert rater_client.get("/api/votes/").status_code == 403
    assert staff.get("/api/votes/").json()["count"] == 1
    bad = rater_client.post("/api/votes/", {"token": "not-served", "up": True, "request_id": "req-00003"}, format="json")
    assert bad.status_code == 400 and "no item with this token" in bad.json()["detail"]
    generation.__class__.objects.filter(pk=generation.pk).update(state="done")
    closed = rater_client.post("/api/votes/", {"token": token, "up": True, "request_id": "req-00004"}, format="json")
    assert closed.status_code == 409 and "closed" in closed.json()["detail"] and closed.json()["skip"] is True


def test_sample_filters_and_real_images(staff, tiny_config):
    generation = open_generation(tiny_config, samples=6)
    generation.samples.filter(index__lt=2).update(accepted=True)
    generation.samples.filter(index__gte=2).update(accepted=False)
    listed = staff.get("/api/samples/", {"generation": generation.pk, "accepted": "true"}).json()
    assert listed["count"] == 2 and {s["source"] for s in listed["results"]} == {"synthetic"}
    assert staff.get("/api/samples/", {"accepted": "maybe"}).status_code == 400
    assert staff.get("/api/samples/", {"source": "real"}).status_code == 400
    real = staff.get("/api/samples/", {"source": "real", "experiment": generation.experiment_id}).json()
    assert real["count"] == 300 and real["results"][0]["source"] == "real"


def test_exports_are_created_polled_and_downloaded(staff, tiny_config):
    generation = open_generation(tiny_config, samples=6)
    generation.samples.update(accepted=True, accept_reason="human")
    created = staff.post("/api/exports/", {"experiment": generation.experiment_id, "format": "imagefolder",
                                           "generation": 0}, format="json")
    assert created.status_code == 201 and created.json()["status"] == "pending" and created.json()["download"] is None
    export_id = created.json()["id"]
    assert staff.get(f"/api/exports/{export_id}/download/").status_code == 409
    run_export(export_id)  # the task's work (tests do not run on-commit hooks)
    polled = staff.get(f"/api/exports/{export_id}/").json()
    assert polled["status"] == "done" and polled["record_count"] == 6
    download = staff.get(f"/api/exports/{export_id}/download/")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content)))
    assert len([n for n in archive.namelist() if n.endswith(".png")]) == 6
    bad = staff.post("/api/exports/", {"experiment": generation.experiment_id, "format": "hf", "generation": 9}, format="json")
    assert bad.status_code == 400 and "no generation 9" in bad.json()["generation"][0]
    assert Export.objects.count() == 1
    # Parquet too: shards and the dataset card, zipped.
    parquet = staff.post("/api/exports/", {"experiment": generation.experiment_id, "format": "parquet"}, format="json")
    assert parquet.status_code == 201
    run_export(parquet.json()["id"])
    download = staff.get(f"/api/exports/{parquet.json()['id']}/download/")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content)))
    assert sorted(archive.namelist()) == ["README.md", "data/train-00000-of-00001.parquet"]


def test_the_schema_and_docs_are_served(staff):
    schema = staff.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/exports/{id}/download/" in schema.content
    docs = staff.get("/api/docs/")
    assert docs.status_code == 200 and b"cdn" not in docs.content.lower()


def test_the_api_never_answers_with_a_server_error(tiny_config):
    """Schemathesis draws requests from the served schema for every operation (a bounded number each)
    and sends them through the whole Django stack with a staff token: none may get a 5xx."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections
    from hypothesis import given
    from knox.models import AuthToken
    from schemathesis.checks import not_a_server_error

    from config.wsgi import application

    user = get_user_model().objects.create_user("fuzz", is_staff=True)
    _, token = AuthToken.objects.create(user=user)
    open_generation(tiny_config, samples=4)
    # As Django's test client does: keep the test's database connection open across requests.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
        # (not the token revocations: they would end the token the other requests are sent with)
        operations = [op for op in (result.ok() for result in schema.get_all_operations()) if "/revoke" not in op.path]
        assert len(operations) >= 12
        for operation in operations:
            @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy())
            def check(case):
                case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=[not_a_server_error])

            check()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
