"""Agreement between raters and vote aggregation, on binary (up/down) votes.

Votes come as three parallel arrays: item index, rater index, vote (1 up, 0 down).

- Krippendorff's alpha (nominal), by the `krippendorff` package.
- Gwet's AC1 (Gwet 2008, multi-rater form): unlike kappa-style scores, it does not collapse when
  nearly all votes agree, as they will on easy generations.
- Dawid & Skene (1979) maximum-likelihood aggregation by EM, with a sensitivity and specificity per
  rater, beside the plain majority. crowd-kit implements it too, but pulls in transformers, nltk and
  pyarrow; the binary case is a few lines of numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import krippendorff
import numpy as np

SMOOTHING = 0.01


def _counts(items: np.ndarray, votes: np.ndarray, item_count: int) -> tuple[np.ndarray, np.ndarray]:
    ups = np.bincount(items, weights=votes, minlength=item_count)
    totals = np.bincount(items, minlength=item_count).astype(float)
    return ups, totals


def krippendorff_alpha(items: np.ndarray, raters: np.ndarray, votes: np.ndarray) -> float | None:
    if len(votes) == 0 or len(np.unique(votes)) < 2:
        return None  # undefined without disagreement or variation
    matrix = np.full((raters.max() + 1, items.max() + 1), np.nan)
    matrix[raters, items] = votes
    pairable = (~np.isnan(matrix)).sum(axis=0) >= 2
    if not pairable.any():
        return None
    return float(krippendorff.alpha(reliability_data=matrix[:, pairable], level_of_measurement="nominal"))


def gwet_ac1(items: np.ndarray, votes: np.ndarray) -> float | None:
    if len(votes) == 0:
        return None
    ups, totals = _counts(items, votes.astype(float), items.max() + 1)
    rated = totals >= 1
    pairable = totals >= 2
    if not pairable.any():
        return None
    downs = totals - ups
    r = totals[pairable]
    agreement = ((ups[pairable] * (ups[pairable] - 1) + downs[pairable] * (downs[pairable] - 1)) / (r * (r - 1))).mean()
    pi_up = (ups[rated] / totals[rated]).mean()
    # Chance agreement (1 / (q - 1)) * sum_k pi_k (1 - pi_k) with q = 2 categories; at most 0.5.
    chance = 2 * pi_up * (1 - pi_up)
    return float((agreement - chance) / (1 - chance))


def majority(items: np.ndarray, votes: np.ndarray, item_count: int) -> np.ndarray:
    """Share of up votes per item (NaN where unvoted); an item is up when the share is at least 0.5."""
    ups, totals = _counts(items, votes.astype(float), item_count)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, ups / totals, np.nan)


@dataclass(frozen=True)
class DawidSkene:
    posterior_up: np.ndarray  # P(item is truly "up"), NaN where unvoted
    sensitivity: np.ndarray  # per rater: P(votes up | truly up)
    specificity: np.ndarray  # per rater: P(votes down | truly down)
    prior_up: float
    iterations: int


def dawid_skene(items: np.ndarray, raters: np.ndarray, votes: np.ndarray, item_count: int,
                rater_count: int, max_iterations: int = 100, tolerance: float = 1e-6) -> DawidSkene:
    votes = votes.astype(float)
    share = majority(items, votes, item_count)
    voted = ~np.isnan(share)
    posterior = np.where(voted, share, 0.5)
    sensitivity = np.full(rater_count, 0.5)
    specificity = np.full(rater_count, 0.5)
    prior = 0.5
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        # M-step: class prior and each rater's confusion, from the current posteriors (smoothed).
        t = posterior[items]
        prior = float(np.clip(posterior[voted].mean(), SMOOTHING, 1 - SMOOTHING))
        up_weight = np.bincount(raters, weights=t, minlength=rater_count)
        down_weight = np.bincount(raters, weights=1 - t, minlength=rater_count)
        sensitivity = (np.bincount(raters, weights=t * votes, minlength=rater_count) + SMOOTHING) / (up_weight + 2 * SMOOTHING)
        specificity = (np.bincount(raters, weights=(1 - t) * (1 - votes), minlength=rater_count) + SMOOTHING) / (
            down_weight + 2 * SMOOTHING
        )
        # E-step: each item's log-odds of being up, summed over its votes.
        evidence = np.where(
            votes == 1,
            np.log(sensitivity[raters]) - np.log(1 - specificity[raters]),
            np.log(1 - sensitivity[raters]) - np.log(specificity[raters]),
        )
        log_odds = np.log(prior / (1 - prior)) + np.bincount(items, weights=evidence, minlength=item_count)
        updated = np.where(voted, 1 / (1 + np.exp(-log_odds)), 0.5)
        change = np.abs(updated - posterior).max() if len(updated) else 0.0
        posterior = updated
        if change < tolerance:
            break
    return DawidSkene(np.where(voted, posterior, np.nan), sensitivity, specificity, prior, iteration)
