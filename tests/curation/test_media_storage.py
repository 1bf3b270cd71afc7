"""Media in an S3-compatible bucket (MEDIA_STORAGE=s3), against a real S3 server on loopback: the
storage calls, a whole loop with nothing on the web machine's disk, and workers on separate
"machines" (their own media and cache folders) that share only the bucket, the database and the broker."""

from __future__ import annotations

import io
import json
import os
import signal
import zipfile

import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from curation import media, pipeline, tasks
from curation.exports import run_export
from curation.models import Experiment, Export
from tests.curation.factories import started_experiment
from training.config import ModelConfig, TrainConfig
from training.train import train_unet


def test_the_storage_calls_work_on_a_bucket(s3_media):
    assert media.write("a/b/one.txt", "one") == "a/b/one.txt"
    media.write("a/two.bin", b"\x00two")
    media.write("a/b/one.txt", "one again")  # a step run twice writes the same name again
    assert media.read("a/b/one.txt") == b"one again" and media.exists("a/two.bin") and not media.exists("a/none")
    assert media.names_under("a") == ["a/b/one.txt", "a/two.bin"] == s3_media.keys("a/")
    assert media.local_path("a/two.bin") is None
    with pytest.raises(FileNotFoundError):
        media.open_file("a/none")
    media.delete_under("a/b")
    assert s3_media.keys("a/") == ["a/two.bin"]
    assert not settings.MEDIA_ROOT.exists()


def test_a_folder_is_fetched_and_what_changed_is_sent_back_with_its_marker_last(s3_media, monkeypatch):
    media.write("ck/unet/weights.bin", b"w1")
    media.write("ck/notes.txt", b"kept")
    sent = []
    real_write_file = media.write_file
    monkeypatch.setattr(media, "write_file", lambda name, path: sent.append(name) or real_write_file(name, path))
    with media.folder("ck", last="checkpoint.json") as folder:
        assert folder.remote and (folder.path / "unet" / "weights.bin").read_bytes() == b"w1"
        (folder.path / "checkpoint.json").write_text("{}")
        (folder.path / "unet" / "weights.bin").write_bytes(b"w2")
        (folder.path / "a-new-file").write_bytes(b"new")
        (folder.path / ".half-written.tmp").write_bytes(b"no")
        folder.push()
        assert sent == ["ck/a-new-file", "ck/unet/weights.bin", "ck/checkpoint.json"]  # the unchanged notes stay
        folder.push()
        assert len(sent) == 3  # nothing changed since
        local = folder.path
    assert not local.exists()  # this machine's copy goes; the bucket holds the folder
    assert media.read("ck/unet/weights.bin") == b"w2" and not media.exists("ck/.half-written.tmp")
    with media.folder("ck", keep=False) as folder:
        (folder.path / "scratch").write_bytes(b"x")
    assert not media.exists("ck/scratch")


def test_training_sends_its_state_at_each_checkpoint_so_another_machine_resumes(s3_media, tmp_path, monkeypatch):
    images = np.random.default_rng(0).random((32, 1, 8, 8)).astype(np.float32)
    model = ModelConfig()
    config = TrainConfig(steps=40, batch_size=8, checkpoint_every=10, warmup_steps=2, device="cpu")

    class Lost(Exception):
        pass

    def lose_the_machine(done, total, message):  # called at every tenth step, after that step's checkpoint
        if done == 30:
            raise Lost

    with pytest.raises(Lost), media.folder("ck") as folder:
        train_unet(images, model_config=model, train_config=config, checkpoint_dir=folder.path,
                   progress=lose_the_machine, on_checkpoint=folder.push)
    assert media.names_under("ck") == ["ck/training_state.pt"]  # sent at step 30; no weights, no card yet
    settings.MEDIA_CACHE_ROOT = tmp_path / "another-machine"
    with media.folder("ck", last="checkpoint.json") as folder:
        result = train_unet(images, model_config=model, train_config=config, checkpoint_dir=folder.path)
    assert result.resumed_from_step == 30 and media.exists("ck/checkpoint.json") and media.names_under("ck/unet")


@pytest.mark.slow
@pytest.mark.django_db
def test_a_loop_runs_and_exports_with_its_media_in_the_bucket_alone(s3_media, tiny_config, client):
    experiment, generation = started_experiment(tiny_config.replace(generations=2))
    for _ in range(2):
        generation = pipeline.run_generation(generation.pk)
        generation = experiment.generations.order_by("-index").first()
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.DONE, [(g.state, g.error) for g in experiment.generations.all()]
    g0, g1 = experiment.generations.order_by("index")
    keys = s3_media.keys(f"experiments/{experiment.pk}/")
    for g in (g0, g1):
        assert f"{g.checkpoint_dir}/checkpoint.json" in keys and g.grid_image.name in keys
        assert g.samples.count() == tiny_config.samples_per_generation
        assert all(s.image.name in keys for s in g.samples.all())
        assert media.exists(g.discriminators.get().model_file.name)
    card = json.loads(media.read(f"{g1.checkpoint_dir}/checkpoint.json"))
    assert card["step"] == tiny_config.train.steps
    assert not settings.MEDIA_ROOT.exists()  # nothing of it on this machine's disk

    export = run_export(Export.objects.create(experiment=experiment, format="hf", generation=1).pk)
    data = media.read(export.file.name)
    assert export.status == "done" and export.size == len(data) and export.file.name in s3_media.keys("exports/")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert len([n for n in archive.namelist() if n.endswith(".png")]) == export.record_count > 0

    staff = get_user_model().objects.create_user("boss", password="staff password 1", is_staff=True)
    client.force_login(staff)
    response = client.get(f"/api/samples/?generation={g1.pk}")
    sample = response.json()["results"][0]
    assert sample["image"].startswith("/media/experiments/")  # the app's address, never the bucket's
    served = client.get(sample["image"])
    assert served.status_code == 200 and b"".join(served.streaming_content) == media.read(sample["image"][len("/media/"):])
    downloaded = client.get(f"/api/exports/{export.pk}/download/")
    assert downloaded.status_code == 200 and b"".join(downloaded.streaming_content) == data
    assert client.get("/media/experiments/no-such-file.png").status_code == 404


@pytest.mark.django_db
def test_readiness_names_the_bucket_when_it_cannot_be_reached(s3_media, settings, client):
    staff = get_user_model().objects.create_user("boss", password="staff password 1", is_staff=True)
    client.force_login(staff)
    assert client.get("/healthz/ready").json()["checks"]["media"]["ok"] is True
    options = settings.STORAGES["default"]["OPTIONS"]
    settings.STORAGES = {**settings.STORAGES, "default": {**settings.STORAGES["default"], "OPTIONS": {
        **options, "endpoint_url": "http://127.0.0.1:9"}}}  # nothing listens on the discard port
    response = client.get("/healthz/ready")
    assert response.status_code == 503
    media_check = response.json()["checks"]["media"]
    assert media_check["ok"] is False and "127.0.0.1:9" in media_check["detail"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("redis"), reason="needs REDIS_URL (a Redis server)")
def test_workers_on_three_machines_share_one_bucket_and_one_resumes_anothers_training(s3_media, start_worker,
                                                                                     tiny_config):
    """Training on one machine (the `gpu` queue), curation on a second (`default`); the first machine is
    lost mid-training and a third resumes from the state it had sent to the bucket."""
    from tests.curation.test_redis_workers import finished, wait_for

    config = tiny_config.replace(**{"generations": 1, "train.steps": 600, "train.checkpoint_every": 100})
    fast_redelivery = {"CELERY_VISIBILITY_TIMEOUT": "5"}
    trainer = start_worker(queues="gpu", name="trainer", environment={**s3_media.environment("one"), **fast_redelivery})
    curator = start_worker(queues="default", name="curator", environment={**s3_media.environment("two"), **fast_redelivery})
    experiment, generation = started_experiment(config)
    tasks.enqueue(generation.pk)

    wait_for(lambda: media.exists(f"{pipeline._checkpoint_dir(generation)}/training_state.pt"), seconds=240,
             what="the first checkpoint in the bucket", workers=(trainer, curator))
    os.kill(trainer.pid, signal.SIGKILL)
    trainer.wait()
    replacement = start_worker(queues="gpu", name="replacement",
                               environment={**s3_media.environment("three"), **fast_redelivery})
    wait_for(lambda: finished(experiment), seconds=600, what="the experiment", workers=(curator, replacement))
    assert experiment.status == Experiment.Status.DONE, [(g.state, g.error) for g in experiment.generations.all()]
    g0 = experiment.generations.get()
    assert g0.metrics["train_resumed_from_step"] >= 100  # from the lost machine's checkpoint, not from scratch
    assert g0.samples.count() == config.samples_per_generation and g0.discriminators.count() == 1
    assert s3_media.keys(g0.grid_image.name) == [g0.grid_image.name]
    assert not settings.MEDIA_ROOT.exists()
    for machine in ("one", "two", "three"):  # no machine kept media of its own
        assert not (s3_media.root / machine / "media").exists()
