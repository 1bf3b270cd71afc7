"""Read an image dataset laid out as torchvision's `ImageFolder` (one sub-folder per class) or flat
(images at the top, no labels), from a directory or a zip, validating every file.

The rules follow torchvision's `ImageFolder`: classes are the sorted names of the top-level folders,
numbered in that order; images are found by extension anywhere below a class folder, in sorted order;
files at the top level beside class folders are ignored (so a manifest may sit there). Hidden files
and folders (a leading dot, `__MACOSX`) are skipped.

Nothing is resized or converted between colour and greyscale: the loop trains at the data's native
size and mode, so every image must share one size and one of the two modes, or the whole dataset is
refused with the first file that differs. Errors name the file and say what to do.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from training.data import NO_LABEL, images_from_uint8

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
MAX_IMAGES = 100_000
MAX_SIDE = 64
MAX_ARCHIVE_BYTES = 1024**3  # uncompressed, against zip bombs


class ImportProblem(ValueError):
    """A dataset that cannot be imported, with the file and the reason."""


@dataclass(frozen=True)
class ImageFolderData:
    images: np.ndarray  # float32 (N, C, H, W) in [0, 1]
    labels: np.ndarray  # int64 (N,), NO_LABEL when the layout is flat
    class_names: tuple[str, ...]  # index -> folder name; empty when flat
    files: tuple[str, ...]  # the path of each image inside the folder or archive


def _hidden(parts) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _entries(source: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(relative posix path, read-bytes function) for every non-hidden file."""
    if source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            relative = path.relative_to(source).as_posix()
            if not _hidden(PurePosixPath(relative).parts):
                yield relative, path.read_bytes
        return
    if not zipfile.is_zipfile(source):
        raise ImportProblem(f"{source.name}: neither a folder nor a zip archive")
    with zipfile.ZipFile(source) as archive:
        members = [m for m in archive.infolist() if not m.is_dir() and not _hidden(PurePosixPath(m.filename).parts)]
        total = sum(m.file_size for m in members)
        if total > MAX_ARCHIVE_BYTES:
            raise ImportProblem(
                f"{source.name}: the archive unpacks to {total / 1024**3:.1f} GiB, more than the "
                f"{MAX_ARCHIVE_BYTES / 1024**3:.0f} GiB allowed"
            )
        # Read while the archive is open (the size check above bounds what this holds in memory).
        contents = [(m.filename, archive.read(m)) for m in sorted(members, key=lambda m: m.filename)]
    for filename, data in contents:
        yield filename, (lambda data=data: data)


def read_image_folder(source: Path, *, max_images: int = MAX_IMAGES, max_side: int = MAX_SIDE) -> ImageFolderData:
    source = Path(source)
    if not source.exists():
        raise ImportProblem(f"{source}: no such file or folder")
    entries = list(_entries(source))
    # A single top folder wrapping everything (as zipping a folder makes) is not a class: look inside it.
    prefix = ""
    tops = {PurePosixPath(name).parts[0] for name, _ in entries}
    if len(tops) == 1 and all(len(PurePosixPath(n).parts) > 1 for n, _ in entries):
        prefix = next(iter(tops)) + "/"
        entries = [(n[len(prefix):], read) for n, read in entries]
    source_label = source.name + (f"/{prefix.rstrip('/')}" if prefix else "")
    nested = [(n, r) for n, r in entries if len(PurePosixPath(n).parts) > 1]
    top_images = [n for n, _ in entries if len(PurePosixPath(n).parts) == 1 and _is_image(n)]
    if nested and top_images:
        raise ImportProblem(
            f"{source_label}: images both at the top ({top_images[0]}) and in folders: use one sub-folder per "
            "class, or put every image at the top for unlabelled data"
        )
    if nested:
        class_names = tuple(sorted({PurePosixPath(n).parts[0] for n, _ in nested}))
        chosen = []
        for name, read in nested:
            if not _is_image(name):
                raise ImportProblem(
                    f"{prefix}{name}: not an image (extension {PurePosixPath(name).suffix or 'none'}; "
                    f"allowed: {', '.join(IMAGE_EXTENSIONS)})"
                )
            chosen.append((name, read, class_names.index(PurePosixPath(name).parts[0])))
    else:
        class_names = ()
        chosen = [(n, r, NO_LABEL) for n, r in entries if _is_image(n)]
    if not chosen:
        raise ImportProblem(f"{source_label}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    if len(chosen) > max_images:
        raise ImportProblem(f"{source_label}: {len(chosen)} images, more than the {max_images} allowed")

    pixels, first = [], None
    for name, read, _ in chosen:
        array, grey = _decode(prefix + name, read())
        name = prefix + name
        height, width = array.shape[-2:]
        if height != width:
            raise ImportProblem(f"{name}: {width}x{height} is not square; the diffusion model needs square images")
        if height > max_side:
            raise ImportProblem(f"{name}: {width}x{height} is larger than the {max_side}x{max_side} supported")
        if first is None:
            first = (name, array.shape, grey)
        elif grey != first[2]:
            raise ImportProblem(
                f"{name} is {'greyscale' if grey else 'colour'} but {first[0]} is {'greyscale' if first[2] else 'colour'}: "
                "mixed modes are not converted on import; make every image greyscale or every image colour"
            )
        elif array.shape != first[1]:
            raise ImportProblem(
                f"{name} is {array.shape[-1]}x{array.shape[-2]} but {first[0]} is {first[1][-1]}x{first[1][-2]}: "
                "images are not resized on import (the loop trains at the data's native size); resize them to one size first"
            )
        pixels.append(array)
    return ImageFolderData(
        images=images_from_uint8(np.stack(pixels)),
        labels=np.array([label for _, _, label in chosen], dtype=np.int64),
        class_names=class_names,
        files=tuple(name for name, _, _ in chosen),
    )


def _is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def _decode(name: str, data: bytes) -> tuple[np.ndarray, bool]:
    """(C, H, W) uint8 pixels and whether the image is greyscale."""
    if not data:
        raise ImportProblem(f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            grey = image.mode in GREY_MODES
            converted = image.convert("L" if grey else "RGB")
    except UnidentifiedImageError:
        raise ImportProblem(f"{name}: not an image (its contents are not a format Pillow reads)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImportProblem(f"{name}: corrupt image ({error})") from None
    array = np.asarray(converted)
    array = array[None] if grey else np.moveaxis(array, -1, 0)
    return array, grey

