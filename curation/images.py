"""Images in media storage: PNG encoding, atomic writes, reading back into arrays, sample grids."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from django.conf import settings

from curation.ml.imaging import decode_png, encode_png, grid_png, sha256  # noqa: F401 (re-exported)
from training.files import write_atomically as write_file_atomically


def media_path(relative: str) -> Path:
    return Path(settings.MEDIA_ROOT) / relative


def write_atomically(relative: str, data: bytes) -> str:
    """Write bytes under MEDIA_ROOT, whole or not at all (training.files)."""
    write_file_atomically(media_path(relative), data)
    return relative


def read_images(relative_paths: Iterable[str], channels: int) -> np.ndarray:
    arrays = [decode_png(media_path(p).read_bytes(), channels) for p in relative_paths]
    if not arrays:
        return np.empty((0, channels, 0, 0), dtype=np.float32)
    return np.stack(arrays)
