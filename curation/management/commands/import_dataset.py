"""Import a real dataset from an ImageFolder directory or zip (one sub-folder per class, or flat)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from curation.management.database import require_migrated
from curation.datasets import import_image_folder
from training.image_folder import MAX_SIDE, ImportProblem


class Command(BaseCommand):
    help = (
        "Import real images for experiments: a folder or zip with one sub-folder per class (labels from "
        "the folder names) or images at the top (unlabelled). Every image must be square, at most "
        f"{MAX_SIDE}x{MAX_SIDE}, one size and one mode (greyscale or colour): nothing is resized or converted."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", help="Folder or .zip archive.")
        parser.add_argument("--name", required=True, help="The dataset's name, as experiments will refer to it.")

    def handle(self, *args, **options) -> None:
        require_migrated()
        try:
            dataset = import_image_folder(source=options["path"], name=options["name"])
        except ImportProblem as error:
            raise CommandError(f"nothing imported: {error}") from error
        classes = f"{len(dataset.class_names)} classes ({', '.join(dataset.class_names[:10])})" if dataset.class_names else "no labels"
        self.stdout.write(self.style.SUCCESS(
            f"imported {dataset.image_count} images of {dataset.width}x{dataset.height}, {dataset.channels} channel(s), "
            f"{classes} as dataset {dataset.name!r} (id {dataset.pk})"
        ))
