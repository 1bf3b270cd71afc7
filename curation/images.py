"""Images in media storage: PNG encoding, reading back into arrays, sample grids."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from curation import media
from curation.ml.imaging import decode_png, encode_png, grid_png, sha256  # noqa: F401 (re-exported)


def read_images(names: Iterable[str], channels: int) -> np.ndarray:
    arrays = [decode_png(media.read(name), channels) for name in names]
    if not arrays:
        return np.empty((0, channels, 0, 0), dtype=np.float32)
    return np.stack(arrays)
