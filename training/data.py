"""Real data for the loop: scikit-learn's bundled digits as images, the train/curator/test split, and
the pool/reservoir split of the training part."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_LABEL = -1


@dataclass(frozen=True)
class LabelledImages:
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


def load_digits_dataset(size: int | None = None, seed: int = 0) -> LabelledImages:
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
    return LabelledImages(name="digits", images=images, labels=labels)


@dataclass(frozen=True)
class DataSplit:
    """Which real images each part of the loop may see, as sorted indices into the dataset.

    `train`: what the loop trains on (its pool and fresh-data reservoir are drawn from it).
    `curator`: what the simulated raters, the discriminator's real examples and the diversity guard
    are fitted on. `test`: held out for evaluation only; no model is fitted on it.
    """

    train: np.ndarray
    curator: np.ndarray
    test: np.ndarray


def split_dataset(
    labels: np.ndarray, *, test_fraction: float = 0.3, curator_fraction: float = 0.15, seed: int = 0
) -> DataSplit:
    """A seeded split stratified by label (images without a label form a stratum of their own): each
    label's images are shuffled and cut into test, curator and train shares of the given fractions."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    for name, fraction in (("test_fraction", test_fraction), ("curator_fraction", curator_fraction)):
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"{name} must be above 0 and below 1, not {fraction}")
    if test_fraction + curator_fraction >= 1.0:
        raise ValueError(
            f"test_fraction ({test_fraction}) and curator_fraction ({curator_fraction}) leave nothing to train on"
        )
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "curator": [], "test": []}
    for label in np.unique(labels):  # sorted, so the draws are the same however the data is ordered by label
        members = rng.permutation(np.flatnonzero(labels == label))
        test_count = _rounded(test_fraction * len(members))
        curator_count = min(_rounded(curator_fraction * len(members)), len(members) - test_count)
        parts["test"].append(members[:test_count])
        parts["curator"].append(members[test_count : test_count + curator_count])
        parts["train"].append(members[test_count + curator_count :])
    split = {name: np.sort(np.concatenate(chunks)).astype(np.int64) if chunks else np.zeros(0, np.int64)
             for name, chunks in parts.items()}
    for name, indices in split.items():
        if len(indices) == 0:
            raise ValueError(
                f"splitting {len(labels)} images (test {test_fraction:g}, curator {curator_fraction:g}) "
                f"leaves no {name} images: the dataset is too small for these fractions"
            )
    return DataSplit(**split)


def _rounded(value: float) -> int:
    return int(np.floor(value + 0.5))  # half up: Python's round() sends 0.5 to 0


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
