"""Simulated raters: a model of a human voter, for headless runs, tests and benchmarks.

A rater votes up when an image looks like a real one (its typicality, shifted by the rater's bias,
reaches the threshold), and flips that vote with probability `noise`. A human turns down noise, blank
images, blurs and two digits on top of each other even where a classifier would name a digit, so
typicality asks three questions of an image, each answered against real images:

- class: is it clearly one of the classes? The maximum class probability of a Platt-calibrated RBF SVM
  on the pixels (deliberately not the reference MLP the metrics use, so curation by simulated votes is
  not graded in the very feature space it was selected in).
- ink: does it have the ink of a real image? Four statistics (the share of pixels inked, the mean
  intensity, the share of inked pixels that are solid strokes, the share of clean background), as far
  from the nearest class's mean as a Mahalanobis distance with the pooled within-class covariance
  (Ledoit-Wolf) measures. Noise, blank and faded images, blurs, blotches and inverted images are far
  off; light speckle and a one-pixel shift are not (a slight blur, sigma 0.5, is turned down a third of
  the time).
- superposition: is it one image rather than two? The mean distance to the NEAREST nearest 50/50
  superpositions of two real images of different classes over the mean distance to the NEAREST nearest
  single real images. A blend of two digits, what a diffusion model makes when it interpolates between
  modes (Aithal et al. 2024, "Understanding hallucinations in diffusion models through mode
  interpolation"), is far nearer to superpositions than to any one digit; a real digit is not.

Each answer becomes its empirical quantile among the same term's out-of-fold values on the real images
the model was fitted on (0: below every one of them, 1: above all), and an image's typicality is the
least of the three: an image must look real on every count. Out of fold means from a model that did
not see the image: the SVM and the ink statistics' means and covariance are refitted per fold, and a
real image is never one of its own superposition anchors. Each term alone missed some junk (the SVM
names a digit in a blank image with 0.95 confidence, a blend's ink is a digit's, blurs and noise are no
superposition), and pixel-space nearest-neighbour distance, PCA reconstruction error and density
models of pixels or patches either passed blends or turned down digits shifted by one pixel.

A rater's threshold is either fixed (`threshold`, on that typicality scale) or calibrated
(`reject_real`): the typicality below which that share of held-out real images falls, read from the
out-of-fold typicality of the real images the model was fitted on. A calibrated panel rejects about as
many real digits as it is told to, whatever the terms' scales look like. A fixed threshold from before
typicality (a classifier confidence such as 0.8) now asks for an image in the top fifth of real images
on every count, which few real images are: such a rater turns down most of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.covariance import LedoitWolf
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.svm import SVC

from curation.ml.reference import flatten

OUT_OF_FOLD_SPLITS = 5
MAJORITY = 0.5  # a sample is accepted by the panel when at least half of its votes are up
TERMS = ("class", "ink", "superposition")  # the questions typicality asks, in the columns' order
# Pixel levels of the ink statistics (digits' pixels are multiples of 1/16; images are in [0, 1]).
BACKGROUND = 0.1  # below this, a pixel is clean background
INKED = 0.2  # above this, a pixel is ink
SOLID = 0.6  # an inked pixel at least this dark is part of a solid stroke
# Superpositions are made of at most this many real images (a seeded subset of a larger fitting set):
# n anchors make about n^2/2 superpositions, and every scored image is compared with each of them.
MAX_ANCHORS = 300
NEAREST = 3  # distances are averaged over this many nearest: steadier than the nearest alone
PAIR_CELLS_PER_CHUNK = 500_000  # images x superpositions compared at once: small enough to stay in cache


@dataclass(frozen=True)
class SimulatedRaterConfig:
    threshold: float = 0.8
    noise: float = 0.1
    bias: float = 0.0
    seed: int = 0
    # When set, the threshold is calibrated to reject this share of held-out real images
    # (RaterModel.threshold_for) and `threshold` is ignored; None keeps the fixed threshold.
    reject_real: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"a rater's threshold must be within [0, 1], not {self.threshold}")
        if not 0.0 <= self.noise <= 0.5:
            raise ValueError(f"a rater's noise must be within [0, 0.5], not {self.noise}")
        if self.reject_real is not None and not 0.0 <= self.reject_real <= 0.5:
            raise ValueError(f"a rater's reject_real must be within [0, 0.5], not {self.reject_real}")


@dataclass
class InkModel:
    """Where real images' ink statistics lie: each class's mean, and one covariance of the deviations
    from it, pooled over classes (a thin 1 has far less ink than a 0, but both vary alike)."""

    class_means: np.ndarray
    within: LedoitWolf


@dataclass
class RaterModel:
    classifier: CalibratedClassifierCV
    ink: InkModel  # the ink statistics of the real images it was fitted on
    anchors: np.ndarray  # (A, pixels): the real images superpositions are made of
    anchor_labels: np.ndarray  # (A,): their classes; only images of different classes are superposed
    # Each term (TERMS) for each real image it was fitted on, from models that did not see that image:
    # what the model makes of real images it has never seen, the scale every image is ranked on.
    out_of_fold_terms: np.ndarray
    # The typicality of those images, for calibrating thresholds.
    out_of_fold_confidence: np.ndarray

    @classmethod
    def fit(cls, images: np.ndarray, labels: np.ndarray, seed: int = 0) -> "RaterModel":
        pixels, labels = flatten(images), np.asarray(labels)
        folds = StratifiedKFold(n_splits=OUT_OF_FOLD_SPLITS, shuffle=True, random_state=seed)
        held_out_class = cross_val_predict(_calibrated_svm(seed), pixels, labels, cv=folds, method="predict_proba")
        ink = ink_statistics(pixels)
        held_out_ink = np.empty(len(pixels))
        for seen, unseen in folds.split(pixels, labels):
            held_out_ink[unseen] = -_ink_distance(_fit_ink(ink[seen], labels[seen]), ink[unseen])
        anchor_rows = _anchor_rows(len(pixels), seed)
        anchors, anchor_labels = pixels[anchor_rows], labels[anchor_rows]
        itself = np.full(len(pixels), -1)
        itself[anchor_rows] = np.arange(len(anchor_rows))
        terms = np.column_stack([
            held_out_class.max(axis=1),
            held_out_ink,
            superposition_ratio(pixels, anchors, anchor_labels, leave_out=itself),
        ])
        return cls(
            classifier=_calibrated_svm(seed).fit(pixels, labels),
            ink=_fit_ink(ink, labels),
            anchors=anchors,
            anchor_labels=anchor_labels,
            out_of_fold_terms=terms,
            out_of_fold_confidence=_typicality(_quantiles(terms, terms)),
        )

    def terms(self, images: np.ndarray) -> np.ndarray:
        """Each image's answer to each of TERMS (columns), the higher the more real."""
        pixels = flatten(images)
        return np.column_stack([
            self.classifier.predict_proba(pixels).max(axis=1),
            -_ink_distance(self.ink, ink_statistics(pixels)),
            superposition_ratio(pixels, self.anchors, self.anchor_labels),
        ])

    def quantiles(self, images: np.ndarray) -> np.ndarray:
        """Each term's rank among the out-of-fold real values: the share of them at or below the image's."""
        return _quantiles(self.out_of_fold_terms, self.terms(images))

    def confidence(self, images: np.ndarray) -> np.ndarray:
        """How real each image looks: its typicality, the least of its TERMS' quantiles, in [0, 1]."""
        return _typicality(self.quantiles(images), len(self.out_of_fold_terms))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The class each image most likely belongs to: the diversity guard's groups."""
        return self.classifier.predict(flatten(images))

    def threshold_for(self, reject_real: float) -> float:
        """The typicality below which a share `reject_real` of held-out real images falls."""
        if not 0.0 <= reject_real <= 1.0:
            raise ValueError(f"reject_real must be within [0, 1], not {reject_real}")
        return float(np.quantile(self.out_of_fold_confidence, reject_real))


def ink_statistics(pixels: np.ndarray) -> np.ndarray:
    """Per image (a row of pixels in [0, 1]): the share of pixels inked, the mean intensity, the share of
    inked pixels that are solid strokes, and the share of pixels that are clean background."""
    inked = pixels > INKED
    return np.column_stack([
        inked.mean(axis=1),
        pixels.mean(axis=1),
        (pixels >= SOLID).sum(axis=1) / np.maximum(inked.sum(axis=1), 1),
        (pixels < BACKGROUND).mean(axis=1),
    ])


def superposition_ratio(
    pixels: np.ndarray, anchors: np.ndarray, anchor_labels: np.ndarray, *, leave_out: np.ndarray | None = None
) -> np.ndarray:
    """For each image (a row of pixels): the mean distance to the NEAREST nearest means of two anchors
    of different classes over the mean distance to the NEAREST nearest anchors; large for a single real
    image, small for a blend. `leave_out` names, per image, an anchor (its row in `anchors`, or -1 for none) that neither distance
    may use: the image itself, when it is an anchor. Infinite when no two anchors differ in class."""
    first, second = np.triu_indices(len(anchors), k=1)
    differ = anchor_labels[first] != anchor_labels[second]
    first, second = first[differ], second[differ]
    if len(first) == 0:
        return np.full(len(pixels), np.inf)
    # |x - (a + b)/2|^2 = |x|^2 - x.a - x.b + |a + b|^2/4: every distance comes from the images' dot
    # products with the anchors, so no superposition is ever built. Single precision halves the time
    # spent on the images x superpositions table, and changes no ratio by more than a millionth.
    pixels, anchors = np.asarray(pixels, dtype=np.float32), np.asarray(anchors, dtype=np.float32)
    gram = anchors @ anchors.T
    anchor_norms = np.diag(gram)
    pair_norms = (anchor_norms[first] + 2 * gram[first, second] + anchor_norms[second]) / 4
    ratio = np.empty(len(pixels))
    rows = max(1, PAIR_CELLS_PER_CHUNK // len(first))
    for start in range(0, len(pixels), rows):
        chunk = pixels[start : start + rows]
        dots = chunk @ anchors.T
        norms = np.einsum("ij,ij->i", chunk, chunk)[:, None]
        single = norms - 2 * dots + anchor_norms
        pair = dots[:, first]
        pair += dots[:, second]
        np.subtract(norms + pair_norms, pair, out=pair)
        if leave_out is not None:
            itself = np.asarray(leave_out[start : start + rows])
            own = np.flatnonzero(itself >= 0)
            single[own, itself[own]] = np.inf
            pair[(first == itself[:, None]) | (second == itself[:, None])] = np.inf
        # An exact copy of an anchor (distance 0) is as single as an image gets.
        ratio[start : start + rows] = _mean_nearest(pair) / np.maximum(_mean_nearest(single), 1e-12)
    return ratio


def _fit_ink(ink: np.ndarray, labels: np.ndarray) -> InkModel:
    classes = np.unique(labels)
    means = np.stack([ink[labels == c].mean(axis=0) for c in classes])
    within = ink - means[np.searchsorted(classes, labels)]
    return InkModel(class_means=means, within=LedoitWolf(assume_centered=True).fit(within))


def _ink_distance(model: InkModel, ink: np.ndarray) -> np.ndarray:
    """The squared Mahalanobis distance of each image's ink statistics to the nearest class's mean."""
    return np.min([model.within.mahalanobis(ink - mean) for mean in model.class_means], axis=0)


def _mean_nearest(squared_distances: np.ndarray) -> np.ndarray:
    nearest = max(1, min(NEAREST, squared_distances.shape[1] - 1))  # one of them may be left out
    smallest = np.partition(squared_distances, nearest - 1, axis=1)[:, :nearest]
    return np.sqrt(np.maximum(smallest, 0.0)).mean(axis=1)


def _typicality(quantiles: np.ndarray, reference_count: int | None = None) -> np.ndarray:
    """The least of each row's quantiles. Quantiles are multiples of 1/reference_count, so many images
    tie on the least; the mean of all the row's quantiles, scaled below that step, breaks those ties
    (and only those), so that a threshold can turn down as small a share of real images as it is asked."""
    step = 1.0 / (reference_count or len(quantiles))
    return quantiles.min(axis=1) + quantiles.mean(axis=1) * step / 2


def _quantiles(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Column by column, the share of `reference` at or below each of `values`."""
    return np.column_stack([
        np.searchsorted(np.sort(reference[:, t]), values[:, t], side="right") / len(reference)
        for t in range(reference.shape[1])
    ])


def _anchor_rows(count: int, seed: int) -> np.ndarray:
    if count <= MAX_ANCHORS:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=MAX_ANCHORS, replace=False))


def _calibrated_svm(seed: int) -> CalibratedClassifierCV:
    # Platt-calibrated probabilities, as SVC(probability=True) gave before scikit-learn 1.9.
    return CalibratedClassifierCV(SVC(random_state=seed), method="sigmoid", ensemble=False)


def rater_threshold(rater: SimulatedRaterConfig, model: RaterModel) -> float:
    """The typicality a rater's up-vote needs: calibrated on the model when `reject_real` is set."""
    return rater.threshold if rater.reject_real is None else model.threshold_for(rater.reject_real)


KEY_STRIDE = 1_000_000  # sample indices per generation in a sample key (samples_per_generation is at most 100,000)


def sample_keys(generation: int, sample_indices) -> np.ndarray:
    """The keys a sample's simulated votes are drawn under: its generation and index, never a database
    id, so that a run gives the same votes wherever it is stored."""
    return generation * KEY_STRIDE + np.asarray(sample_indices, dtype=np.int64)


def simulated_votes(
    confidence: np.ndarray,
    sample_keys: np.ndarray,
    rater: SimulatedRaterConfig,
    *,
    run_seed: int = 0,
    threshold: float | None = None,
) -> np.ndarray:
    """Up (True) or down for each sample. `threshold` is the rater's resolved threshold
    (`rater_threshold`); a calibrated rater needs it. The noise draw is seeded by the run, the rater
    and the sample key: a rater asked again about the same sample in the same run gives the same
    answer, and another run (experiment seed) draws other noise."""
    if threshold is None:
        if rater.reject_real is not None:
            raise ValueError("a calibrated rater (reject_real set) needs its threshold: pass rater_threshold(rater, model)")
        threshold = rater.threshold
    up = confidence + rater.bias >= threshold
    flips = np.array(
        [np.random.default_rng((run_seed, rater.seed, int(key))).random() < rater.noise for key in sample_keys],
        dtype=bool,
    )
    return up ^ flips


def panel_vote_share(
    confidence: np.ndarray,
    sample_indices: np.ndarray,
    sample_keys: np.ndarray,
    panel: tuple[SimulatedRaterConfig, ...],
    model: RaterModel,
    *,
    votes_per_sample: int,
    run_seed: int = 0,
) -> np.ndarray:
    """Each sample's share of up-votes from `votes_per_sample` raters, rotating through the panel as
    the pipeline does: the sample of index i is rated by panel members (i + k) % len(panel), k < votes."""
    verdicts = np.stack([
        simulated_votes(confidence, sample_keys, rater, run_seed=run_seed, threshold=rater_threshold(rater, model))
        for rater in panel
    ])
    columns = np.arange(len(sample_indices))
    ups = sum(verdicts[(np.asarray(sample_indices) + k) % len(panel), columns] for k in range(votes_per_sample))
    return ups / votes_per_sample


def false_reject_by_class(
    model: RaterModel,
    panel: tuple[SimulatedRaterConfig, ...],
    votes_per_sample: int,
    images: np.ndarray,
    labels: np.ndarray,
    run_seed: int = 0,
) -> dict:
    """The share of real images (held out from `model`) that the panel's majority rejects: "overall",
    "by_class" (str(label) -> share) and the number of "images"."""
    positions = np.arange(len(images))
    share = panel_vote_share(
        model.confidence(images), positions, positions, panel, model, votes_per_sample=votes_per_sample, run_seed=run_seed
    )
    rejected = share < MAJORITY
    return {
        "overall": float(rejected.mean()),
        "by_class": {str(label): float(rejected[labels == label].mean()) for label in np.unique(labels)},
        "images": int(len(images)),
    }
