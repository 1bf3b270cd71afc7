"""Real data for the loop: scikit-learn's bundled digits as images, and the pool/reservoir split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_LABEL = -1


@dataclass(frozen=True)
class RealDataset:
    """Images as float32 (N, C, H, W) in [0, 1]; labels as int64 (N,), NO_LABEL where unknown."""

    name: str
    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)


# Digit pixels are integers 0..16: dividing by 16 maps them into [0, 1] without loss, and
# `quantize_digits` maps an 8-bit PNG back onto the same 17 levels.
DIGITS_LEVELS = 16


def load_digits_dataset(size: int | None = None, seed: int = 0) -> RealDataset:
    """scikit-learn's 1,797 handwritten 8x8 digits (no download), optionally a seeded subset."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / DIGITS_LEVELS)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    if size is not None:
        if not 1 <= size <= len(images):
            raise ValueError(f"digits has {len(images)} images; a size of {size} is not possible")
        keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:size])
        images, labels = images[keep], labels[keep]
    return RealDataset(name="digits", images=images, labels=labels)


@dataclass(frozen=True)
class RealSplit:
    """Which real images G0 trains on (the pool) and which later generations may draw fresh."""

    pool: np.ndarray
    reservoir: np.ndarray


def split_real(count: int, pool_size: int, seed: int) -> RealSplit:
    """A seeded disjoint split of `count` real images into a training pool and a fresh-data reservoir."""
    if not 1 <= pool_size <= count:
        raise ValueError(f"the real pool must hold between 1 and {count} images, not {pool_size}")
    order = np.random.default_rng(seed).permutation(count)
    return RealSplit(pool=np.sort(order[:pool_size]), reservoir=order[pool_size:])


def images_to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] floats to 8-bit pixels, rounding to nearest."""
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def images_from_uint8(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) / 255.0
