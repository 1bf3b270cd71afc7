"""Image bytes without storage: PNG encoding and decoding, hashes, sample grids. No Django."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from training.data import images_from_uint8, images_to_uint8


# Provenance travels inside a synthetic PNG as text chunks under this prefix (plus the standard
# "Software" key), so a file that leaves its dataset stays identifiable.
PROVENANCE_PREFIX = "ouroboros:"
GENERATOR = "Ouroboros"


def encode_png(image: np.ndarray, provenance: Optional[dict] = None) -> bytes:
    """One (C, H, W) image in [0, 1] as 8-bit PNG bytes (greyscale for one channel, else RGB), with
    `provenance` (a flat mapping) written as PNG text chunks."""
    pixels = images_to_uint8(image)
    mode_pixels = pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)
    info = None
    if provenance:
        info = PngInfo()
        info.add_text("Software", GENERATOR)
        for key, value in provenance.items():
            info.add_text(PROVENANCE_PREFIX + key, "" if value is None else str(value))
    buffer = io.BytesIO()
    Image.fromarray(mode_pixels).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_provenance(source: Union[bytes, str, Path]) -> dict:
    """The provenance written by `encode_png` into a PNG (bytes or a path): {"generator", key: value...};
    empty when the file carries none."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        text = dict(getattr(image, "text", {}) or {})
    found = {key[len(PROVENANCE_PREFIX):]: value for key, value in text.items() if key.startswith(PROVENANCE_PREFIX)}
    if found:
        found["generator"] = text.get("Software", "")
    return found


def decode_png(data: bytes, channels: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("L" if channels == 1 else "RGB")
        pixels = np.asarray(image)
    pixels = pixels[None] if channels == 1 else np.moveaxis(pixels, -1, 0)
    return images_from_uint8(pixels)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def grid_png(images: np.ndarray, columns: int = 16, scale: int = 4, gap: int = 1) -> bytes:
    """A sample grid: images tiled with a gap, upscaled by nearest neighbour so pixels stay crisp."""
    count, channels, height, width = images.shape
    rows = max(1, -(-count // columns))
    pixels = images_to_uint8(images)
    canvas = np.full((channels, rows * (height + gap) + gap, columns * (width + gap) + gap), 255, dtype=np.uint8)
    for i in range(count):
        r, c = divmod(i, columns)
        top, left = gap + r * (height + gap), gap + c * (width + gap)
        canvas[:, top : top + height, left : left + width] = pixels[i]
    canvas = canvas.repeat(scale, axis=1).repeat(scale, axis=2)
    mode_pixels = canvas[0] if channels == 1 else np.moveaxis(canvas, 0, -1)
    buffer = io.BytesIO()
    Image.fromarray(mode_pixels).save(buffer, format="PNG")
    return buffer.getvalue()
