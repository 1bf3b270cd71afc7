"""Image bytes without storage: PNG encoding and decoding, hashes, sample grids. No Django."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

from training.data import images_from_uint8, images_to_uint8


def encode_png(image: np.ndarray) -> bytes:
    """One (C, H, W) image in [0, 1] as 8-bit PNG bytes (greyscale for one channel, else RGB)."""
    pixels = images_to_uint8(image)
    mode_pixels = pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)
    buffer = io.BytesIO()
    Image.fromarray(mode_pixels).save(buffer, format="PNG")
    return buffer.getvalue()


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
