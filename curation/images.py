"""Images in media storage: PNG encoding, atomic writes, reading back into arrays, sample grids."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
from django.conf import settings

from curation.ml.imaging import decode_png, encode_png, grid_png, sha256  # noqa: F401 (re-exported)


def media_path(relative: str) -> Path:
    return Path(settings.MEDIA_ROOT) / relative


def write_atomically(relative: str, data: bytes) -> str:
    """Write bytes under MEDIA_ROOT via a temporary name and a rename: never a half-written file."""
    path = media_path(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return relative


def read_images(relative_paths: Iterable[str], channels: int) -> np.ndarray:
    arrays = [decode_png(media_path(p).read_bytes(), channels) for p in relative_paths]
    if not arrays:
        return np.empty((0, channels, 0, 0), dtype=np.float32)
    return np.stack(arrays)
