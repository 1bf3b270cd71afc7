"""Curated datasets out with provenance, loaded back by the tools people use, and re-imported."""

from __future__ import annotations

import csv
import json
import zipfile

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from curation import pipeline
from curation.exports import FIELDS, collect_records, pseudonym, run_export, write_export
from curation.images import media_path
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
    provenance = read_provenance(media_path(sample.image.name))
    assert provenance["generator"] == "Ouroboros" and provenance["source"] == "synthetic"
    assert provenance["experiment"] == str(finished.pk) and provenance["generation"] == "0"
    assert provenance["checkpoint_sha256"] == sample.generation.checkpoint_sha256 != ""
    assert provenance["seed"] == str(sample.seed) and provenance["sampler"] == sample.sampler
    assert read_provenance(media_path(finished.dataset.images.first().image.name)) == {}


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
    assert row["sha256"] == sample.sha256 == sha256(media_path(sample.image.name).read_bytes())
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
    path = media_path(done.file.name)
    assert done.size == path.stat().st_size and done.sha256 == sha256(path.read_bytes())
    assert not list(path.parent.glob(".*tmp"))
    with zipfile.ZipFile(path) as archive:
        archive.extractall(tmp_path / "unzipped")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "unzipped"), split="train")
    assert len(loaded) == done.record_count and all(loaded["accepted"])
    assert run_export(export.pk).sha256 == done.sha256  # a second run changes nothing


def test_a_failed_write_leaves_no_file_under_the_final_name(finished, tmp_path, monkeypatch):
    records = collect_records(experiment=finished, include_rejected=True)
    calls = {"n": 0}
    original = zipfile.ZipFile.write

    def failing_write(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "write", failing_write)
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
