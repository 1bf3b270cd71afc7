"""Importing a real dataset: every bad input refused with the file and the reason, nothing left behind."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from curation.datasets import import_image_folder
from curation import media
from curation.models import RealDataset, RealImage
from training import image_folder
from training.image_folder import ImportProblem, read_image_folder

pytestmark = pytest.mark.django_db


def png(size=8, mode="L", value=128) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (size, size), value if mode == "L" else (value, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_folder(root, files: dict):
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def make_zip(path, files: dict):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_labels_come_from_folder_names_in_sorted_order(tmp_path):
    folder = make_folder(tmp_path / "d", {"b/1.png": png(value=10), "a/2.png": png(value=20), "a/sub/3.png": png(),
                                          "manifest.csv": b"id\n", ".hidden/x.png": b"junk"})
    data = read_image_folder(folder)
    assert data.class_names == ("a", "b") and list(data.labels) == [0, 0, 1]
    assert data.files == ("a/2.png", "a/sub/3.png", "b/1.png") and data.images.shape == (3, 1, 8, 8)


def test_a_flat_folder_is_unlabelled_and_a_wrapping_folder_in_a_zip_is_looked_through(tmp_path):
    data = read_image_folder(make_zip(tmp_path / "flat.zip", {"data/x.png": png(), "data/y.png": png()}))
    assert data.class_names == () and list(data.labels) == [-1, -1]


@pytest.mark.parametrize("files, message", [
    ({"a/x.png": b"this is text"}, "a/x.png: not an image"),
    ({"a/x.png": png()[:-25], "b/y.png": png()}, "a/x.png: corrupt image"),
    ({"a/x.png": b""}, "a/x.png: empty file"),
    ({"a/notes.txt": b"hello", "b/y.png": png()}, "a/notes.txt: not an image (extension .txt"),
    ({"a/x.png": png(), "b/y.png": png(mode="RGB")}, "b/y.png is colour but a/x.png is greyscale: mixed modes"),
    ({"a/x.png": png(8), "b/y.png": png(16)}, "b/y.png is 16x16 but a/x.png is 8x8: images are not resized"),
    ({"a/x.png": png(128)}, "a/x.png: 128x128 is larger than the 64x64 supported"),
    ({"x.png": png(), "a/y.png": png()}, "images both at the top"),
    ({"readme.txt": b"no images here"}, "no images found"),
])
def test_bad_input_is_refused_naming_the_file_and_the_problem(tmp_path, files, message):
    with pytest.raises(ImportProblem, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_image_folder(make_zip(tmp_path / "bad.zip", files))
    with pytest.raises(ImportProblem, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_image_folder(make_folder(tmp_path / "bad", files))


def test_other_bad_sources(tmp_path, monkeypatch):
    with pytest.raises(ImportProblem, match="no images found"):
        read_image_folder(make_zip(tmp_path / "empty.zip", {}))
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(ImportProblem, match="neither a folder nor a zip"):
        read_image_folder(tmp_path / "plain.txt")
    with pytest.raises(ImportProblem, match="no such file"):
        read_image_folder(tmp_path / "missing")
    with pytest.raises(ImportProblem, match="not square"):
        buffer = io.BytesIO()
        Image.new("L", (8, 4)).save(buffer, format="PNG")
        read_image_folder(make_zip(tmp_path / "wide.zip", {"a/x.png": buffer.getvalue(), "b/y.png": png()}))
    with pytest.raises(ImportProblem, match="3 images, more than the 2 allowed"):
        read_image_folder(make_zip(tmp_path / "many.zip", {f"a/{i}.png": png() for i in range(3)}), max_images=2)
    monkeypatch.setattr(image_folder, "MAX_ARCHIVE_BYTES", 100)
    with pytest.raises(ImportProblem, match="unpacks to"):
        read_image_folder(make_zip(tmp_path / "bomb.zip", {"a/x.png": png(), "b/x.png": png()}))


def test_an_import_stores_images_labels_and_class_names(tmp_path):
    source = make_zip(tmp_path / "mine.zip", {"cat/1.png": png(value=1), "dog/2.png": png(value=200), "dog/3.png": png()})
    dataset = import_image_folder(source=source, name="pets")
    assert dataset.class_names == ["cat", "dog"] and dataset.image_count == 3
    assert (dataset.height, dataset.width, dataset.channels) == (8, 8, 1)
    assert list(dataset.images.order_by("index").values_list("label", flat=True)) == [0, 1, 1]
    with pytest.raises(ImportProblem, match="already exists"):
        import_image_folder(source=source, name="pets")


def test_a_failure_while_storing_leaves_nothing_behind(tmp_path, monkeypatch):
    from curation import datasets

    source = make_folder(tmp_path / "d", {f"a/{i}.png": png(value=i) for i in range(6)} | {"b/x.png": png()})
    calls = {"n": 0}
    real_encode = datasets.encode_png

    def failing(image):  # the fourth image fails to store
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full")
        return real_encode(image)

    monkeypatch.setattr(datasets, "encode_png", failing)
    before = set(RealDataset.objects.values_list("pk", flat=True))
    folders_before = set(media.default_storage.listdir("datasets")[0])
    with pytest.raises(OSError):
        import_image_folder(source=source, name="half")
    assert set(RealDataset.objects.values_list("pk", flat=True)) == before
    assert not RealImage.objects.filter(dataset__name="half").exists()
    assert set(media.default_storage.listdir("datasets")[0]) == folders_before


def test_the_import_command(tmp_path, capsys):
    source = make_folder(tmp_path / "d", {"0/a.png": png(), "1/b.png": png(value=3)})
    call_command("import_dataset", str(source), "--name", "tiny")
    assert "imported 2 images" in capsys.readouterr().out
    with pytest.raises(CommandError, match="bad.zip: neither a folder nor a zip"):
        (tmp_path / "bad.zip").write_text("nope")
        call_command("import_dataset", str(tmp_path / "bad.zip"), "--name", "other")
    assert not RealDataset.objects.filter(name="other").exists()
    assert np.isclose(RealDataset.objects.get(name="tiny").images.count(), 2)
