"""Known-bad gold items: real images ruined in the ways a loop's samples go wrong, so that a rater
who votes them up is visibly not paying attention."""

from __future__ import annotations

import numpy as np

RUINS = ("noise", "blotch", "blur", "inverted")


def ruined_images(images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Each image ruined one way, cycling through RUINS; returns the images and what was done."""
    out = np.empty_like(images)
    descriptions = []
    for n, image in enumerate(images):
        ruin = RUINS[n % len(RUINS)]
        if ruin == "noise":
            out[n] = rng.random(image.shape)
        elif ruin == "blotch":
            out[n] = np.clip(image * 0.3 + rng.random(image.shape) * 0.2, 0, 1)
            h, w = image.shape[1:]
            top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
            out[n][:, top : top + h // 2, left : left + w // 2] = 1.0
        elif ruin == "blur":
            blurred = image.copy()
            for _ in range(3):
                blurred = (blurred + np.roll(blurred, 1, 1) + np.roll(blurred, -1, 1)
                           + np.roll(blurred, 1, 2) + np.roll(blurred, -1, 2)) / 5
            out[n] = blurred / max(blurred.max(), 1e-6) * 0.5
        else:
            out[n] = 1.0 - image
        descriptions.append(f"known bad: {ruin}")
    return out.astype(np.float32), descriptions
