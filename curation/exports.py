"""Curated datasets out of Ouroboros, with provenance on every record.

Formats:
- `hf`: an image folder with `metadata.jsonl` (the layout `datasets.load_dataset("imagefolder",
  data_dir=...)` reads: every record field becomes a column beside the image);
- `imagefolder`: torchvision's `ImageFolder` layout, one folder per label (or accepted / rejected /
  real), with `manifest.csv` beside the class folders;
- `parquet`: Parquet shards (`data/train-NNNNN-of-NNNNN.parquet`) with an `image` column and every
  record field, and a dataset card (`README.md`): what `datasets.load_dataset("parquet", data_files=...)`
  reads with the images decoded, and what `export --push-to-hub` uploads to the Hugging Face Hub;
- `manifest` / `manifest-json`: the records alone, as CSV or JSON.

What is exported: the synthetic samples of the experiment (or of one generation) that curation
accepted; optionally the rejected ones; optionally the real images the experiment trained on (its G0
pool and every fresh draw). Every file is written under a temporary name and renamed into place, so
no half-written export ever carries the final name.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

from django.conf import settings
from django.db.models import Count, Q
from django.http import FileResponse
from django.utils import timezone

from curation import media
from curation.models import Export, RealImage, Sample, TrainingMember, Vote
from training.files import temporary_beside, write_atomically
from training.progress import ProgressCallback, report

FIELDS = (
    "id", "file_name", "sha256", "source", "label", "label_source", "experiment", "experiment_name", "generation",
    "checkpoint_sha256", "sampler", "steps", "temperature", "seed", "up_votes", "down_votes", "raters",
    "discriminator_score", "accepted", "accept_reason", "created_at",
)
UNLABELLED = "unlabelled"
SHARD_RECORDS = 2000  # images a Parquet shard holds
# The Parquet columns, with the Hugging Face `datasets` feature each is read back as (stored in the
# file's schema metadata, as `datasets` itself writes it: the image column decodes to an image).
PARQUET_COLUMNS = {
    "image": (None, {"_type": "Image"}),
    "id": ("string", None), "file_name": ("string", None), "sha256": ("string", None), "source": ("string", None),
    "label": ("string", None), "label_source": ("string", None), "experiment": ("int64", None),
    "experiment_name": ("string", None), "generation": ("int64", None), "checkpoint_sha256": ("string", None),
    "sampler": ("string", None), "steps": ("int64", None), "temperature": ("float64", None), "seed": ("int64", None),
    "up_votes": ("int64", None), "down_votes": ("int64", None), "raters": ("list", None),
    "discriminator_score": ("float64", None), "accepted": ("bool", None), "accept_reason": ("string", None),
    "created_at": ("string", None),
}
# Licences of the real datasets Ouroboros ships, by their recorded source: the Hub's licence id, and
# what the card says.
KNOWN_LICENCES = {
    "sklearn.datasets.load_digits": ("cc-by-4.0", "CC BY 4.0 (UCI Machine Learning Repository, Optical Recognition "
                                                  "of Handwritten Digits, via scikit-learn)"),
}


class ExportError(Exception):
    pass


def download(export: Export) -> FileResponse:
    """A finished export's file, as an attachment under its own name."""
    return FileResponse(media.open_file(export.file.name), as_attachment=True,
                        filename=export.file.name.rsplit("/", 1)[-1])


def file_sha256(path: Path) -> str:
    """A file's SHA-256, read in chunks (an export may be larger than memory should hold)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def pseudonym(rater_id: int) -> str:
    """A rater's stable pseudonymous id in exports: keyed by this deployment's secret, not reversible."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"rater:{rater_id}".encode(), hashlib.sha256).hexdigest()
    return f"rater-{digest[:12]}"


def collect_records(*, experiment, generation: Optional[int] = None, include_real: bool = False,
                    include_rejected: bool = False) -> list[dict]:
    """One record per exported image; `_path` (its name in media storage) says where its bytes are."""
    generations = experiment.generations.all()
    if generation is not None:
        generations = generations.filter(index=generation)
        if not generations.exists():
            raise ExportError(f"experiment {experiment.pk} has no generation {generation}")
    samples = Sample.objects.filter(generation__in=generations).select_related("generation")
    samples = samples.filter(accepted__isnull=False) if include_rejected else samples.filter(accepted=True)
    samples = list(samples.order_by("generation__index", "index"))
    tallies = {
        row["sample_id"]: (row["ups"], row["downs"])
        for row in Vote.objects.filter(sample__in=samples, flagged=False).values("sample_id").annotate(
            ups=Count("pk", filter=Q(up=True)), downs=Count("pk", filter=Q(up=False))
        )
    }
    raters: dict[int, list[str]] = {}
    for sample_id, rater_id in Vote.objects.filter(sample__in=samples, flagged=False).values_list("sample_id", "rater_id"):
        raters.setdefault(sample_id, []).append(pseudonym(rater_id))
    records = []
    for s in samples:
        ups, downs = tallies.get(s.pk, (0, 0))
        verdict = "accepted" if s.accepted else "rejected"
        label = "" if s.predicted_class is None else str(s.predicted_class)
        records.append({
            "id": f"synthetic-{s.pk}",
            "file_name": f"synthetic/g{s.generation.index:03d}/{s.index:05d}.png",
            "sha256": s.sha256,
            "source": "synthetic",
            "label": label,
            "label_source": "predicted by the reference classifier" if label else "",
            "experiment": experiment.pk,
            "experiment_name": experiment.name,
            "generation": s.generation.index,
            "checkpoint_sha256": s.generation.checkpoint_sha256,
            "sampler": s.sampler,
            "steps": s.steps,
            "temperature": s.temperature,
            "seed": s.seed,
            "up_votes": ups,
            "down_votes": downs,
            "raters": sorted(raters.get(s.pk, [])),
            "discriminator_score": s.discriminator_score,
            "accepted": bool(s.accepted),
            "accept_reason": s.accept_reason,
            "created_at": s.created_at.isoformat(),
            "_path": s.image.name,
            "_verdict": verdict,
        })
    if include_real:
        used = set(experiment.real_pool) | set(
            TrainingMember.objects.filter(generation__experiment=experiment, fresh=True).values_list("real_image_id", flat=True)
        )
        for image in RealImage.objects.filter(pk__in=used).select_related("dataset").order_by("index"):
            records.append({
                "id": f"real-{image.pk}",
                "file_name": f"real/{image.index:06d}.png",
                "sha256": image.sha256,
                "source": "real",
                "label": "" if image.label is None else str(image.label),
                "label_source": "" if image.label is None else f"dataset {image.dataset.name}",
                "experiment": experiment.pk,
                "experiment_name": experiment.name,
                "generation": None,
                "checkpoint_sha256": "",
                "sampler": "",
                "steps": None,
                "temperature": None,
                "seed": None,
                "up_votes": 0,
                "down_votes": 0,
                "raters": [],
                "discriminator_score": None,
                "accepted": True,
                "accept_reason": "real",
                "created_at": image.dataset.created_at.isoformat(),
                "_path": image.image.name,
                "_verdict": "real",
            })
    return records


def public(record: dict) -> dict:
    return {k: record[k] for k in FIELDS}


def _folder(record: dict, layout: str) -> str:
    if layout == Export.Layout.VERDICT:
        return record["_verdict"]
    return record["label"] or UNLABELLED


def write_export(records: list[dict], *, fmt: str, layout: str, destination: Path, as_zip: bool,
                 progress: Optional[ProgressCallback] = None, card: str = "") -> None:
    """Write `records` in `fmt` to `destination` (a zip file, a directory, or a manifest file), atomically.
    `card`: the dataset card a Parquet export carries as its README.md."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(destination)
    if fmt in (Export.Format.MANIFEST_CSV, Export.Format.MANIFEST_JSON):
        write_atomically(destination, _manifest(records, fmt))
        report(progress, len(records), len(records), "manifest written")
        return
    if fmt == Export.Format.PARQUET:
        _write_parquet(records, destination, as_zip=as_zip, card=card, progress=progress)
        return
    files = [(_member_name(r, fmt, layout), r["_path"]) for r in records]
    extra = {"metadata.jsonl": _jsonl(records, fmt, layout)} if fmt == Export.Format.HF else {
        "manifest.csv": _manifest([{**r, "file_name": _member_name(r, fmt, layout)} for r in records], Export.Format.MANIFEST_CSV)
    }
    try:
        if as_zip:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
                for name, data in extra.items():
                    archive.writestr(name, data)
                for n, (name, path) in enumerate(files):
                    archive.writestr(name, media.read(path))
                    _every(progress, n + 1, len(files))
        else:
            tmp.mkdir()
            for name, data in extra.items():
                (tmp / name).write_bytes(data)
            for n, (name, path) in enumerate(files):
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(media.read(path))
                _every(progress, n + 1, len(files))
        os.replace(tmp, destination)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise


def _write_parquet(records: list[dict], destination: Path, *, as_zip: bool, card: str,
                   progress: Optional[ProgressCallback]) -> None:
    """Parquet shards and the card, in a zip file or a directory, atomically."""
    import pyarrow.parquet as pq

    shards = [records[start:start + SHARD_RECORDS] for start in range(0, len(records), SHARD_RECORDS)]
    tmp = temporary_beside(destination).with_suffix(".dir")  # the shards; a zip is written beside them
    try:
        tmp.mkdir()
        (tmp / "README.md").write_text(card)
        done = 0
        for n, shard in enumerate(shards):
            name = tmp / "data" / f"train-{n:05d}-of-{len(shards):05d}.parquet"
            name.parent.mkdir(exist_ok=True)
            pq.write_table(_parquet_table(shard), name)
            done += len(shard)
            report(progress, done, len(records), f"{done}/{len(records)} images")
        if as_zip:
            archive_tmp = temporary_beside(destination)
            with zipfile.ZipFile(archive_tmp, "w", compression=zipfile.ZIP_STORED) as archive:
                for path in sorted(tmp.rglob("*")):
                    if path.is_file():
                        archive.write(path, path.relative_to(tmp).as_posix())
            shutil.rmtree(tmp)
            os.replace(archive_tmp, destination)
        else:
            os.replace(tmp, destination)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        temporary_beside(destination).unlink(missing_ok=True)
        raise


def _parquet_table(records: list[dict]):
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(),
             "list": pa.list_(pa.string()), None: pa.struct([("bytes", pa.binary()), ("path", pa.string())])}
    schema = pa.schema([(name, types[kind]) for name, (kind, _) in PARQUET_COLUMNS.items()])
    features = {name: feature or ({"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"} if kind == "list"
                                  else {"dtype": kind, "_type": "Value"})
                for name, (kind, feature) in PARQUET_COLUMNS.items()}
    schema = schema.with_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    rows = [{**public(r), "image": {"bytes": media.read(r["_path"]), "path": r["file_name"]},
             "label": r["label"] or None} for r in records]
    return pa.Table.from_pylist(rows, schema=schema)


def verdict_counts(records: list[dict]) -> str:
    """How many records of each verdict, e.g. "12 accepted, 3 real"."""
    counts: dict[str, int] = {}
    for record in records:
        counts[record["_verdict"]] = counts.get(record["_verdict"], 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


def dataset_card(*, experiment, records: list[dict], generation: Optional[int] = None) -> str:
    """The README.md of a Parquet export: what it holds, how it was made and curated, and under which
    licence the real data it stands on was published."""
    config = experiment.loop_config
    dataset = experiment.dataset
    licence_id, licence = KNOWN_LICENCES.get(dataset.source, (
        "other", f"not recorded: check the licence of {dataset.source} before publishing"))
    rows = []
    for g in experiment.generations.filter(state="done").order_by("index"):
        if generation is None or g.index == generation:
            metrics = g.metrics
            rows.append(f"| G{g.index} | " + " | ".join(
                "–" if metrics.get(name) is None else f"{metrics[name]:.3f}" for name in CARD_METRICS) + " |")
    yaml_header = "\n".join([
        "---", f"pretty_name: {json.dumps(experiment.name)}", f"license: {licence_id}", "task_categories:",
        "- unconditional-image-generation", "tags:", "- synthetic", "- ouroboros", "- human-curated", "configs:",
        "- config_name: default", "  data_files:", "  - split: train", "    path: data/train-*.parquet", "---",
    ])
    return "\n".join([
        yaml_header, "", f"# {experiment.name}", "",
        f"Synthetic images from a self-consuming generative loop run by Ouroboros (experiment {experiment.pk}"
        f"{f', generation {generation}' if generation is not None else ''}), curated by votes and a discriminator, "
        f"with the provenance of every image in its columns. {len(records)} images: {verdict_counts(records)}.", "",
        "## How it was made", "",
        f"- Real data: `{dataset.name}` ({dataset.source}), {dataset.image_count} images. Licence: {licence}.",
        f"- Loop: {config.mix.loop}, {config.generations} generations, {config.samples_per_generation} samples a "
        f"generation; training mix real fraction {config.mix.real_fraction}, training set {config.mix.train_size}.",
        f"- Curation: policy `{config.curation.policy}`, discriminator `{config.curation.discriminator}`, acceptance "
        f"`{config.curation.acceptance}`, diversity guard {'on' if config.curation.diversity_guard else 'off'}; "
        f"{config.rating.votes_per_sample} vote(s) per rated sample from {config.rating.raters} raters, "
        f"{config.rating.rating_budget} rated a generation, the discriminator scoring the rest.",
        "- Columns: `accepted` and `accept_reason` (curation's verdict), `up_votes` / `down_votes` and `raters` "
        "(pseudonymous ids), `discriminator_score`, `generation`, `checkpoint_sha256`, `sampler`, `steps`, "
        "`temperature` and `seed` (enough to sample the image again), `label` (predicted by a reference classifier "
        "for synthetic images).", "",
        "## Generation metrics (held-out test split)", "",
        "| generation | " + " | ".join(CARD_METRICS) + " |", "|---|" + "---|" * len(CARD_METRICS), *rows, "",
        "## Settings", "", "```json", json.dumps(experiment.config, indent=1, sort_keys=True), "```", "",
    ])


CARD_METRICS = ("fd", "precision", "recall", "coverage", "memorization", "acceptance_rate")


def push_to_hub(folder: Path, repo_id: str, *, private: bool = False) -> str:
    """Upload a Parquet export's folder (shards and card) to a Hugging Face dataset repository, created if
    missing, in one commit; the token comes from HF_TOKEN (and the Hub from HF_ENDPOINT), as the Hub
    client reads them. Returns the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                               commit_message=f"Ouroboros export: {Path(folder).name}")
    return str(getattr(commit, "commit_url", commit))


def _member_name(record: dict, fmt: str, layout: str) -> str:
    if fmt == Export.Format.HF:
        return record["file_name"]
    return f"{_folder(record, layout)}/{record['id']}.png"


def _jsonl(records: list[dict], fmt: str, layout: str) -> bytes:
    lines = [json.dumps({**public(r), "file_name": _member_name(r, fmt, layout)}) for r in records]
    return ("\n".join(lines) + "\n").encode()


def _manifest(records: list[dict], fmt: str) -> bytes:
    if fmt == Export.Format.MANIFEST_JSON:
        return json.dumps([public(r) for r in records], indent=1).encode()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    for record in records:
        row = public(record)
        row["raters"] = " ".join(row["raters"])
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue().encode()


def _every(progress, done: int, total: int) -> None:
    if done % 64 == 0 or done == total:
        report(progress, done, total, f"{done}/{total} images")


# --- the Export row: what the task, the API and the command run ---------------------------------


EXTENSIONS = {
    Export.Format.HF: "zip", Export.Format.IMAGEFOLDER: "zip",
    Export.Format.MANIFEST_CSV: "csv", Export.Format.MANIFEST_JSON: "json", Export.Format.PARQUET: "zip",
}


def export_file_name(export: Export) -> str:
    scope = f"g{export.generation:03d}" if export.generation is not None else "all"
    return f"experiment-{export.experiment_id}-{scope}-{export.format}-{export.pk}.{EXTENSIONS[export.format]}"


def run_export(export_id: int) -> Export:
    """Write an Export's file to media storage under exports/. Safe to run twice: a finished export stays as is."""
    export = Export.objects.select_related("experiment").get(pk=export_id)
    if export.status == Export.Status.DONE:
        return export
    Export.objects.filter(pk=export.pk).update(status=Export.Status.RUNNING, error="", progress_message="collecting records")

    def progress(done: int, total: int, message: str) -> None:
        Export.objects.filter(pk=export.pk).update(progress_fraction=done / total if total else 1.0, progress_message=message)

    relative = f"exports/{export_file_name(export)}"
    try:
        records = collect_records(experiment=export.experiment, generation=export.generation,
                                  include_real=export.include_real, include_rejected=export.include_rejected)
        if not records:
            raise ExportError("nothing to export: no accepted samples yet (finish a generation's curation first, "
                              "or include rejected samples or real data)")
        card = dataset_card(experiment=export.experiment, records=records, generation=export.generation) \
            if export.format == Export.Format.PARQUET else ""
        with tempfile.TemporaryDirectory(prefix="ouroboros-export-") as folder:
            written = Path(folder) / relative.rsplit("/", 1)[-1]
            write_export(records, fmt=export.format, layout=export.layout, destination=written,
                         as_zip=True, progress=progress, card=card)
            size, digest = written.stat().st_size, file_sha256(written)
            media.write_file(relative, written)
    except Exception as error:
        Export.objects.filter(pk=export.pk).update(status=Export.Status.FAILED, error=str(error)[:2000])
        raise
    Export.objects.filter(pk=export.pk).update(
        status=Export.Status.DONE, file=relative, size=size, sha256=digest,
        record_count=len(records), progress_fraction=1.0, progress_message="done", finished_at=timezone.now(),
    )
    export.refresh_from_db()
    return export

