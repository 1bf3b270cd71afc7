"""Export an experiment's curated dataset, with provenance, in a format other tools load directly."""

from __future__ import annotations

import os
import re
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from curation.management.database import require_migrated
from curation.exports import (
    ExportError, collect_records, dataset_card, push_to_hub, verdict_counts, write_export,
)
from curation.models import Experiment, Export


HUB_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


class Command(BaseCommand):
    help = (
        "Export accepted samples (optionally rejected ones and the real data) with provenance: "
        "hf (an image folder with metadata.jsonl for datasets.load_dataset('imagefolder')), imagefolder "
        "(torchvision ImageFolder layout), parquet (Parquet shards with a dataset card, for "
        "datasets.load_dataset('parquet') and the Hugging Face Hub) or manifest (CSV, or JSON when PATH ends in "
        ".json). hf, imagefolder and parquet write a zip when PATH ends in .zip, else a directory."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--experiment", type=int, required=True, help="Experiment id.")
        parser.add_argument("--generation", type=int, help="Only this generation (default: all).")
        parser.add_argument("--format", required=True, choices=["hf", "imagefolder", "manifest", "parquet"])
        parser.add_argument("--output", required=True, help="Where to write (must not exist).")
        parser.add_argument("--layout", choices=[c.value for c in Export.Layout], default="label",
                            help="imagefolder: a folder per label, or accepted/rejected/real.")
        parser.add_argument("--include-real", action="store_true", help="Add the real images the experiment trained on.")
        parser.add_argument("--include-rejected", action="store_true", help="Add the samples curation rejected.")
        parser.add_argument("--push-to-hub", metavar="ORG/NAME",
                            help="parquet: then upload the folder to this Hugging Face dataset repository (created "
                                 "if missing), with a token from HF_TOKEN.")
        parser.add_argument("--private", action="store_true", help="--push-to-hub: create the repository private.")

    def handle(self, *args, **options) -> None:
        require_migrated()
        experiment = Experiment.objects.filter(pk=options["experiment"]).first()
        if experiment is None:
            raise CommandError(f"no experiment {options['experiment']}; `python manage.py shell` or /experiments/ lists them")
        output = Path(options["output"])
        if output.exists():
            raise CommandError(f"{output} already exists: choose a new path (exports never overwrite)")
        fmt = options["format"]
        repo_id = options["push_to_hub"]
        if repo_id:
            if fmt != Export.Format.PARQUET:
                raise CommandError("--push-to-hub uploads a Parquet export: add --format parquet")
            if output.suffix == ".zip":
                raise CommandError("--push-to-hub uploads a folder: give --output a directory path, not a .zip")
            if not HUB_REPO.fullmatch(repo_id):
                raise CommandError(f"--push-to-hub takes a dataset repository as ORG/NAME, not {repo_id!r}")
            if not os.environ.get("HF_TOKEN"):
                raise CommandError("--push-to-hub needs a Hugging Face token with write access in HF_TOKEN")
        if fmt == "manifest" and output.suffix == ".json":
            fmt = Export.Format.MANIFEST_JSON
        try:
            records = collect_records(experiment=experiment, generation=options["generation"],
                                      include_real=options["include_real"], include_rejected=options["include_rejected"])
        except ExportError as error:
            raise CommandError(str(error)) from error
        if not records:
            raise CommandError("nothing to export: no accepted samples (add --include-rejected or --include-real?)")
        with tqdm(total=len(records), unit="image", desc="export") as bar:
            def progress(done, total, message):
                bar.n = done
                bar.refresh()

            card = dataset_card(experiment=experiment, records=records, generation=options["generation"]) \
                if fmt == Export.Format.PARQUET else ""
            write_export(records, fmt=fmt, layout=options["layout"], destination=output,
                         as_zip=output.suffix == ".zip", progress=progress, card=card)
        self.stdout.write(self.style.SUCCESS(f"wrote {output}: {len(records)} records ({verdict_counts(records)})"))
        if repo_id:
            try:
                url = push_to_hub(output, repo_id, private=options["private"])
            except Exception as error:  # the Hub's own errors say what went wrong (auth, name, network)
                raise CommandError(f"could not push to the Hub ({error}); {output} is kept, push it again later") from error
            self.stdout.write(self.style.SUCCESS(f"pushed to {url}"))
