"""Real datasets in storage, their arrays, and the models fitted once on them: the reference
classifier (metrics' feature space, groups) and the simulated raters' classifier."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from dataclasses import dataclass

import numpy as np
from django.db import transaction

from curation.errors import CurationError
from curation import media
from curation.images import encode_png, read_images, sha256
from curation.ml.model_files import SUFFIX, dump_model, load_model
from curation.ml.real import RealModels, fit_real_models
from curation.models import RealDataset, RealImage
from training.data import NO_LABEL, DataSplit, load_digits_dataset, split_dataset

MODEL_VERSION = 5  # 2: RealModels moved to curation.ml.real; 3: skops, not pickle; 4: fitted on the held-out split;
# 5: raters score typicality (class, ink, superposition)


def ensure_digits_dataset() -> RealDataset:
    """The embedded default: scikit-learn's digits, stored once as PNGs with labels."""
    existing = RealDataset.objects.filter(name="digits").first()
    if existing is not None and existing.image_count == existing.images.count() > 0:
        return existing
    data = load_digits_dataset()
    return import_arrays(name="digits", source="sklearn.datasets.load_digits", images=data.images, labels=data.labels)


def dataset_named(name: str) -> RealDataset:
    """The stored dataset called `name` (the embedded digits are stored on first use); a CurationError
    naming the stored ones if there is none."""
    dataset = ensure_digits_dataset() if name == "digits" else RealDataset.objects.filter(name=name).first()
    if dataset is None:
        known = ", ".join(RealDataset.objects.order_by("name").values_list("name", flat=True))
        raise CurationError(f"no dataset named {name!r}; stored datasets: {known}")
    return dataset


def import_arrays(*, name: str, source: str, images: np.ndarray, labels: np.ndarray,
                  class_names: tuple = ()) -> RealDataset:
    """Store images as a dataset in one transaction; if anything fails, its files go too."""
    _, channels, height, width = images.shape
    folder = None
    try:
        with transaction.atomic():
            dataset, _ = RealDataset.objects.update_or_create(
                name=name, defaults={"source": source, "channels": channels, "height": height, "width": width,
                                     "class_names": list(class_names)}
            )
            folder = f"datasets/{dataset.pk}"
            _store_images(dataset, images, labels)
    except BaseException:
        if folder is not None and not RealDataset.objects.filter(name=name).exists():
            media.delete_under(folder)
        raise
    return dataset


def _store_images(dataset: RealDataset, images: np.ndarray, labels: np.ndarray) -> None:
    rows = []
    for index, (image, label) in enumerate(zip(images, labels)):
        data = encode_png(image)
        path = media.write(f"datasets/{dataset.pk}/{index:06d}.png", data)
        rows.append(
            RealImage(
                dataset=dataset,
                index=index,
                label=None if label == NO_LABEL else int(label),
                image=path,
                sha256=sha256(data),
            )
        )
    RealImage.objects.bulk_create(rows, ignore_conflicts=True)
    dataset.image_count = dataset.images.count()
    dataset.save(update_fields=["image_count"])


@dataclass(frozen=True)
class RealArrays:
    ids: np.ndarray
    images: np.ndarray
    labels: np.ndarray

    def subset(self, ids) -> np.ndarray:
        position = {int(i): n for n, i in enumerate(self.ids)}
        return self.images[[position[int(i)] for i in ids]]


def _identity(dataset_id: int) -> tuple:
    """What tells one stored dataset from another that later got the same id (a deleted dataset's id
    can be handed out again): the caches below are keyed by it, never by the id alone."""
    created_at, count = RealDataset.objects.values_list("created_at", "image_count").get(pk=dataset_id)
    return dataset_id, created_at.strftime("%Y%m%dT%H%M%S%f"), count


def real_arrays(dataset_id: int) -> RealArrays:
    return _real_arrays(_identity(dataset_id))


@functools.lru_cache(maxsize=4)
def _real_arrays(identity: tuple) -> RealArrays:
    dataset = RealDataset.objects.get(pk=identity[0])
    rows = list(dataset.images.order_by("index").values_list("pk", "image", "label"))
    images = read_images([r[1] for r in rows], dataset.channels)
    labels = np.array([NO_LABEL if r[2] is None else r[2] for r in rows], dtype=np.int64)
    return RealArrays(ids=np.array([r[0] for r in rows]), images=images, labels=labels)


def dataset_split(dataset_id: int) -> DataSplit:
    """The dataset's fixed split (train, curator, test) as RealImage ids: the same one `real_models` fits
    on, computed from the labels alone (no image is read), so that creating an experiment stays cheap."""
    rows = list(RealImage.objects.filter(dataset_id=dataset_id).order_by("index").values_list("pk", "label"))
    ids = np.array([pk for pk, _ in rows], dtype=np.int64)
    split = split_dataset(np.array([NO_LABEL if label is None else label for _, label in rows], dtype=np.int64))
    return DataSplit(train=ids[split.train], curator=ids[split.curator], test=ids[split.test])


def real_models(dataset_id: int) -> RealModels:
    """Fitted once per dataset content, stored under datasets/real-models/, loaded from there afterwards."""
    return _real_models(_identity(dataset_id))


@functools.lru_cache(maxsize=4)
def _real_models(identity: tuple) -> RealModels:
    name = _real_models_name(identity[0])
    if media.exists(name):
        return load_model(media.read(name))
    arrays = _real_arrays(identity)
    models = fit_real_models(arrays.images, arrays.labels)
    _write_summary(name, models)
    media.write(name, dump_model(models))
    return models


@dataclass(frozen=True)
class RealSummary:
    class_proportions: dict
    real_floor: dict


def real_summary(dataset_id: int) -> RealSummary:
    """What pages show of the real models (class proportions, the real-vs-real FD floor), read from a
    small JSON file beside them: the web process never loads the models themselves (nor skops, which
    imports torch)."""
    return _real_summary(_identity(dataset_id))


@functools.lru_cache(maxsize=16)
def _real_summary(identity: tuple) -> RealSummary:
    name = _real_models_name(identity[0])
    if not media.exists(_summary_name(name)):
        _write_summary(name, _real_models(identity))  # fitted here only if no worker has fitted them yet
    data = json.loads(media.read(_summary_name(name)))
    return RealSummary({int(k): v for k, v in data["class_proportions"].items()}, data["real_floor"])


def _real_models_name(dataset_id: int) -> str:
    # Stored by content: the same images and labels, imported again under another id, reuse the fit.
    return f"datasets/real-models/{_fingerprint(dataset_id)}-v{MODEL_VERSION}{SUFFIX}"


def _summary_name(models_name: str) -> str:
    return f"{models_name.removesuffix(SUFFIX)}.json"


def _write_summary(models_name: str, models: RealModels) -> None:
    summary = {"class_proportions": models.class_proportions, "real_floor": models.real_floor}
    media.write(_summary_name(models_name), json.dumps(summary))


def _fingerprint(dataset_id: int) -> str:
    digest = hashlib.sha256()
    for image_hash, label in RealImage.objects.filter(dataset_id=dataset_id).order_by("index").values_list("sha256", "label"):
        digest.update(f"{image_hash}:{label}\n".encode())
    return digest.hexdigest()[:32]


def import_image_folder(*, source, name: str) -> RealDataset:
    """Import an ImageFolder directory or zip as a real dataset. Every file is read and checked before
    anything is stored; a failure part-way leaves no rows and no files behind."""
    from training.image_folder import ImportProblem, read_image_folder

    name = name.strip()
    if not name:
        raise ImportProblem("a dataset needs a name")
    if RealDataset.objects.filter(name=name).exists():
        raise ImportProblem(f"a dataset named {name!r} already exists: choose another name")
    data = read_image_folder(source)
    return import_arrays(name=name, source=f"import of {Path(source).name}", images=data.images, labels=data.labels,
                         class_names=data.class_names)
