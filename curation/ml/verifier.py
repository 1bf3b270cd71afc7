"""The real-anchored verifier: how real a sample looks, learnt from held-out real images against the
generation's own samples, with the raters' verdicts and known-bad images pooled in.

The vote-trained discriminator learns only what a few hundred votes say. The verifier also knows
what real data looks like: its positives are the curator split's real images (never trained on,
never evaluated on) and every sample raters voted up so far, in any generation; its negatives are
the generation's unrated samples, every sample voted down so far, and real images ruined the ways a
loop's samples go wrong (gold.ruined_images). Classes are weighted to balance, so the score D reads
as P(real) at even odds and D / (1 - D) estimates how much likelier the image is under the real
data than under the model: the ratio that `acceptance = resample` keeps samples by.

Features see digits rather than only pixels: the pixels and image statistics of the discriminator,
plus the image's coordinates in a PCA of the curator split and its distance from that subspace (a
blotch, a blend or speckle lies off the digits' manifold). Nothing is fitted on the test split or
on the reference classifier whose feature space the metrics use, so curation cannot tune itself to
the yardstick.

Each sample of the generation is scored by a model that did not see it (k-fold, out of fold), and
the verifier's real-vs-generated AUC is measured the same way, on held-out real images against held-out
samples, with a bootstrap 95% interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from curation.ml.discriminator import image_features
from curation.ml.gold import ruined_images
from curation.ml.reference import flatten
from curation.ml.statistics import Interval

FOLDS = 5
COMPONENTS = 16
BOOTSTRAP = 500


@dataclass
class VerifierFeatures:
    """Pixels, image statistics, PCA coordinates of the curator split and the distance from it."""

    pca: PCA

    @classmethod
    def fit(cls, curator_images: np.ndarray, seed: int = 0) -> "VerifierFeatures":
        pixels = flatten(curator_images)
        components = min(COMPONENTS, len(pixels) - 1, pixels.shape[1])
        return cls(PCA(n_components=components, random_state=seed).fit(pixels))

    def transform(self, images: np.ndarray) -> np.ndarray:
        pixels = flatten(images)
        coordinates = self.pca.transform(pixels)
        residual = np.linalg.norm(pixels - self.pca.inverse_transform(coordinates), axis=1)
        return np.hstack([image_features(images), coordinates, residual[:, None]])


@dataclass
class Verification:
    scores: np.ndarray  # P(real) of each of the generation's samples, out of fold
    auc: Optional[Interval]  # held-out real images against held-out unrated samples
    real_count: int
    generated_count: int
    voted_up: int
    voted_down: int
    ruined: int

    def metrics(self) -> dict:
        return {
            "verifier_auc": self.auc.estimate if self.auc else None,
            "verifier_auc_low": self.auc.low if self.auc else None,
            "verifier_auc_high": self.auc.high if self.auc else None,
            "verifier_examples": {"real": self.real_count, "generated": self.generated_count,
                                  "voted_up": self.voted_up, "voted_down": self.voted_down, "ruined": self.ruined},
        }


def verify(*, curator_images: np.ndarray, samples: np.ndarray, vote_share: np.ndarray,
           pooled_up: np.ndarray, pooled_down: np.ndarray, seed: int = 0, c: float = 0.5) -> Verification:
    """Score the generation's `samples` (N, C, H, W). `vote_share` is theirs (NaN where unrated): a
    voted sample is a positive (share >= 0.5) or a negative, an unrated one a negative of the
    real-vs-generated kind. `pooled_up` / `pooled_down`: images voted up / down in earlier generations."""
    if len(curator_images) < FOLDS or len(samples) < FOLDS:
        raise ValueError(f"the verifier needs at least {FOLDS} real images and {FOLDS} samples")
    rng = np.random.default_rng(seed)
    seed = seed % 2**32  # scikit-learn takes 32-bit seeds
    ruined, _ = ruined_images(curator_images[rng.permutation(len(curator_images))[: max(FOLDS, len(curator_images) // 4)]],
                              rng)
    features = VerifierFeatures.fit(curator_images, seed=seed)
    voted = ~np.isnan(vote_share)
    up = voted & (vote_share >= 0.5)
    # Rows: real, ruined, pooled up, pooled down, then the generation's samples (scored out of fold).
    parts = [curator_images, ruined, _images_like(pooled_up, samples), _images_like(pooled_down, samples), samples]
    x = features.transform(np.concatenate(parts))
    kind = np.concatenate([np.full(len(p), k) for k, p in enumerate(parts)])
    label = np.concatenate([np.ones(len(curator_images)), np.zeros(len(ruined)), np.ones(len(parts[2])),
                            np.zeros(len(parts[3])), up.astype(float)]).astype(bool)
    generated = kind == 4
    oof = np.full(len(x), np.nan)
    # Folds stratified by (kind, label), so each holds its share of real images and of samples.
    strata = kind * 2 + label
    rare = np.bincount(strata)[strata] < FOLDS
    # Rare strata pooled together, and into the largest one if even that pool is too small to split.
    strata = np.where(rare, -1 if rare.sum() >= FOLDS else np.bincount(strata).argmax(), strata)
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    for train, test in folds.split(x, strata):
        oof[test] = _model(seed, c).fit(x[train], label[train]).predict_proba(x[test])[:, 1]
    real = kind == 0
    unrated = generated.copy()
    unrated[generated] = ~voted
    auc = _auc_interval(oof[real], oof[unrated], rng) if unrated.sum() >= 2 else None
    return Verification(scores=oof[generated], auc=auc, real_count=int(real.sum()), generated_count=int(unrated.sum()),
                        voted_up=int(up.sum() + len(parts[2])), voted_down=int((voted & ~up).sum() + len(parts[3])),
                        ruined=len(ruined))


def _images_like(images: np.ndarray, samples: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float32).reshape((-1, *samples.shape[1:]))


def _model(seed: int, c: float):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000,
                                                              random_state=seed))


def _auc_interval(real: np.ndarray, generated: np.ndarray, rng: np.random.Generator) -> Interval:
    """AUC of real against generated scores, with a percentile bootstrap 95% interval (each side
    resampled on its own)."""
    labels = np.concatenate([np.ones(len(real)), np.zeros(len(generated))])
    estimate = float(roc_auc_score(labels, np.concatenate([real, generated])))
    draws = []
    for _ in range(BOOTSTRAP):
        r = real[rng.integers(0, len(real), len(real))]
        g = generated[rng.integers(0, len(generated), len(generated))]
        draws.append(roc_auc_score(labels, np.concatenate([r, g])))
    low, high = np.percentile(draws, [2.5, 97.5])
    return Interval(estimate, float(low), float(high), n=len(real) + len(generated), p_value=None, confidence=0.95,
                    method="percentile bootstrap")
