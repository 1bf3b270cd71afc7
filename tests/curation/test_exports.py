"""Curated datasets out with provenance, loaded back by the tools people use, and re-imported."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from django.core.management import CommandError, call_command

from curation import media, pipeline
from curation.exports import FIELDS, collect_records, dataset_card, pseudonym, run_export, write_export
from curation.ml.imaging import read_provenance, sha256
from curation.models import Export, Rater, RealDataset, Sample
from curation.services import create_experiment, start_experiment
from training.image_folder import read_image_folder

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished(tiny_config):
    """A one-generation experiment curated by simulated votes and the discriminator."""
    experiment = create_experiment(name="export me", config=tiny_config.replace(generations=1))
    generation = pipeline.run_generation(start_experiment(experiment=experiment).pk)
    assert generation.state == "done"
    return experiment


def test_synthetic_pngs_carry_their_provenance(finished):
    sample = Sample.objects.filter(generation__experiment=finished).first()
    provenance = read_provenance(media.read(sample.image.name))
    assert provenance["generator"] == "Ouroboros" and provenance["source"] == "synthetic"
    assert provenance["experiment"] == str(finished.pk) and provenance["generation"] == "0"
    assert provenance["checkpoint_sha256"] == sample.generation.checkpoint_sha256 != ""
    assert provenance["seed"] == str(sample.seed) and provenance["sampler"] == sample.sampler
    assert read_provenance(media.read(finished.dataset.images.first().image.name)) == {}


def test_the_hf_image_folder_loads_with_datasets_with_every_field(finished, tmp_path):
    import datasets

    records = collect_records(experiment=finished, include_real=True, include_rejected=True)
    write_export(records, fmt="hf", layout="label", destination=tmp_path / "hf", as_zip=False)
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "hf"), split="train")
    assert len(loaded) == len(records) == 96 + 300
    assert set(FIELDS) - {"file_name"} <= set(loaded.column_names)
    row = next(r for r in loaded if r["id"].startswith("synthetic-"))
    sample = Sample.objects.get(pk=int(row["id"].split("-")[1]))
    assert row["image"].size == (8, 8)
    assert row["sha256"] == sample.sha256 == sha256(media.read(sample.image.name))
    assert row["generation"] == 0 and row["checkpoint_sha256"] == sample.generation.checkpoint_sha256
    assert row["seed"] == sample.seed and row["accepted"] == sample.accepted
    assert row["accept_reason"] == sample.accept_reason
    assert row["up_votes"] + row["down_votes"] == sample.votes.count()
    counted = sum(1 for r in loaded if r["source"] == "real")
    assert counted == 300 and sum(1 for r in loaded if r["source"] == "synthetic") == 96
    rated = [r for r in loaded if r["raters"]]
    assert rated and all(name.startswith("rater-") for r in rated for name in r["raters"])
    assert not any(rater.name in json.dumps(list(loaded["raters"])) for rater in Rater.objects.all())


def test_export_task_writes_a_zip_atomically_and_records_it(finished, tmp_path):
    import datasets

    export = Export.objects.create(experiment=finished, format="hf", generation=0)
    done = run_export(export.pk)
    assert done.status == "done" and done.record_count == finished.generations.get().samples.filter(accepted=True).count()
    data = media.read(done.file.name)
    assert done.size == len(data) and done.sha256 == sha256(data)
    assert media.names_under("exports") == [done.file.name]  # nothing half-written left beside it
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(tmp_path / "unzipped")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "unzipped"), split="train")
    assert len(loaded) == done.record_count and all(loaded["accepted"])
    assert run_export(export.pk).sha256 == done.sha256  # a second run changes nothing


def test_a_failed_write_leaves_no_file_under_the_final_name(finished, tmp_path, monkeypatch):
    records = collect_records(experiment=finished, include_rejected=True)
    calls = {"n": 0}
    original = zipfile.ZipFile.writestr

    def failing_writestr(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing_writestr)
    with pytest.raises(OSError, match="disk full"):
        write_export(records, fmt="imagefolder", layout="label", destination=tmp_path / "out.zip", as_zip=True)
    assert list(tmp_path.iterdir()) == []


def test_imagefolder_export_reads_back_with_imagefolder_rules_and_reimports_as_real_data(finished, tmp_path, tiny_config):
    from curation.datasets import import_image_folder, real_arrays

    records = collect_records(experiment=finished, include_rejected=True)
    write_export(records, fmt="imagefolder", layout="label", destination=tmp_path / "folder.zip", as_zip=True)
    data = read_image_folder(tmp_path / "folder.zip")
    assert len(data.images) == len(records) and data.images.shape[1:] == (1, 8, 8)
    expected = sorted({r["label"] for r in records})
    assert list(data.class_names) == expected
    by_file = {f"{r['label']}/{r['id']}.png": r for r in records}
    for name, label in zip(data.files, data.labels):
        assert data.class_names[label] == by_file[name]["label"]

    dataset = import_image_folder(source=tmp_path / "folder.zip", name="curated digits")
    assert dataset.image_count == len(records) and dataset.class_names == expected
    arrays = real_arrays(dataset.pk)
    assert np.allclose(np.sort(arrays.images.reshape(len(records), -1), axis=0),
                       np.sort(data.images.reshape(len(records), -1), axis=0))
    # And it is a real dataset a new experiment can start from.
    experiment = create_experiment(name="on curated", config=tiny_config.replace(dataset="curated digits", pool_size=48,
                                                                                  **{"mix.train_size": 48}))
    assert experiment.dataset == dataset and len(experiment.real_pool) == 48


def test_verdict_layout_and_manifests(finished, tmp_path):
    records = collect_records(experiment=finished, include_rejected=True, include_real=True)
    write_export(records, fmt="imagefolder", layout="verdict", destination=tmp_path / "v", as_zip=False)
    assert sorted(p.name for p in (tmp_path / "v").iterdir() if p.is_dir()) == ["accepted", "real", "rejected"]
    assert len(list((tmp_path / "v" / "real").iterdir())) == 300
    write_export(records, fmt="manifest", layout="label", destination=tmp_path / "m.csv", as_zip=False)
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert len(rows) == len(records) and tuple(rows[0]) == FIELDS
    write_export(records, fmt="manifest-json", layout="label", destination=tmp_path / "m.json", as_zip=False)
    data = json.loads((tmp_path / "m.json").read_text())
    assert {r["source"] for r in data} == {"real", "synthetic"}
    assert {r["accept_reason"] for r in data if r["source"] == "synthetic" and r["accepted"]} <= {"human", "discriminator", "both", "guard"}


def test_pseudonyms_are_stable_and_distinct():
    assert pseudonym(1) == pseudonym(1) != pseudonym(2)


def test_the_export_command(finished, tmp_path, capsys):
    call_command("export", "--experiment", str(finished.pk), "--format", "hf", "--output", str(tmp_path / "hf"))
    assert (tmp_path / "hf" / "metadata.jsonl").exists()
    assert "records" in capsys.readouterr().out
    with pytest.raises(CommandError, match="already exists"):
        call_command("export", "--experiment", str(finished.pk), "--format", "hf", "--output", str(tmp_path / "hf"))
    with pytest.raises(CommandError, match="no experiment 999"):
        call_command("export", "--experiment", "999", "--format", "hf", "--output", str(tmp_path / "x"))
    with pytest.raises(CommandError, match="no generation 7"):
        call_command("export", "--experiment", str(finished.pk), "--generation", "7", "--format", "manifest",
                     "--output", str(tmp_path / "m.csv"))
    call_command("export", "--experiment", str(finished.pk), "--generation", "0", "--format", "imagefolder",
                 "--layout", "verdict", "--include-rejected", "--output", str(tmp_path / "if.zip"))
    assert zipfile.ZipFile(tmp_path / "if.zip").namelist()[0] == "manifest.csv"
    assert RealDataset.objects.count() == 1


def test_parquet_shards_load_with_datasets_with_decoded_images_and_every_field(finished, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr("curation.exports.SHARD_RECORDS", 150)  # 396 records: three shards
    records = collect_records(experiment=finished, include_real=True, include_rejected=True)
    card = dataset_card(experiment=finished, records=records)
    write_export(records, fmt="parquet", layout="label", destination=tmp_path / "pq", as_zip=False, card=card)
    shards = sorted(p.name for p in (tmp_path / "pq" / "data").iterdir())
    assert shards == [f"train-0000{n}-of-00003.parquet" for n in range(3)]
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "pq" / "data" / "*.parquet"), split="train")
    assert len(loaded) == len(records) == 96 + 300
    assert set(FIELDS) <= set(loaded.column_names) and isinstance(loaded.features["image"], datasets.Image)
    row = next(r for r in loaded if r["id"].startswith("synthetic-"))
    sample = Sample.objects.get(pk=int(row["id"].split("-")[1]))
    assert row["image"].size == (8, 8)
    assert np.array_equal(np.asarray(row["image"]), np.asarray(Image.open(io.BytesIO(media.read(sample.image.name)))))
    assert row["seed"] == sample.seed and row["accepted"] == sample.accepted and row["generation"] == 0
    assert row["up_votes"] + row["down_votes"] == sample.votes.count() == len(row["raters"])
    real = next(r for r in loaded if r["source"] == "real")
    assert real["generation"] is None and real["accept_reason"] == "real"
    # The card: the Hub reads its YAML header; people read the rest.
    text = (tmp_path / "pq" / "README.md").read_text()
    assert text.startswith("---\n") and "path: data/train-*.parquet" in text and "license: cc-by-4.0" in text
    assert "CC BY 4.0 (UCI" in text and "policy `human+discriminator`" in text
    assert f"| G0 | {finished.generations.get().metrics['fd']:.3f} |" in text


def test_a_parquet_export_from_the_task_is_a_zip_of_shards_and_card(finished, tmp_path):
    import datasets

    export = Export.objects.create(experiment=finished, format="parquet")
    done = run_export(export.pk)
    with zipfile.ZipFile(io.BytesIO(media.read(done.file.name))) as archive:
        assert sorted(archive.namelist()) == ["README.md", "data/train-00000-of-00001.parquet"]
        archive.extractall(tmp_path / "unzipped")
    loaded = datasets.load_dataset("parquet", data_dir=str(tmp_path / "unzipped" / "data"), split="train")
    assert len(loaded) == done.record_count and all(loaded["accepted"])


def test_push_to_hub_uploads_the_shards_and_card_in_one_commit(finished, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))

    def upload_folder(self, *, folder_path, repo_id, repo_type, commit_message):
        uploaded = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        calls.append(("upload", repo_id, repo_type, uploaded, (Path(folder_path) / "README.md").read_text()))
        return type("Commit", (), {"commit_url": f"https://hub.example/datasets/{repo_id}/commit/1"})()

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    out = tmp_path / "hub"
    with pytest.raises(CommandError, match="HF_TOKEN"):
        call_command("export", "--experiment", str(finished.pk), "--format", "parquet", "--output", str(out),
                     "--push-to-hub", "lab/digits-curated")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    with pytest.raises(CommandError, match="add --format parquet"):
        call_command("export", "--experiment", str(finished.pk), "--format", "hf", "--output", str(out),
                     "--push-to-hub", "lab/digits-curated")
    with pytest.raises(CommandError, match="ORG/NAME"):
        call_command("export", "--experiment", str(finished.pk), "--format", "parquet", "--output", str(out),
                     "--push-to-hub", "no-org")
    assert calls == [] and not out.exists()
    call_command("export", "--experiment", str(finished.pk), "--format", "parquet", "--output", str(out),
                 "--push-to-hub", "lab/digits-curated", "--private")
    assert calls[0] == ("create", "lab/digits-curated", {"repo_type": "dataset", "private": True, "exist_ok": True})
    _, repo, kind, files, card = calls[1]
    assert (repo, kind) == ("lab/digits-curated", "dataset")
    assert files == ["README.md", "data/train-00000-of-00001.parquet"]
    assert "# export me" in card and "## Generation metrics" in card
