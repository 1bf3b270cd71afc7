"""Intervals, paired differences and Holm-adjusted verdicts over seeds, for the study's report.

Pure numpy/scipy: a value per (variant, seed, generation, metric) goes in, intervals and verdicts
come out. Differences are always a - b, paired by position (by seed): a is the variant under test,
b the one it is compared with, so "better" means "a is better than b".

The verdict rule, as the report quotes it:

    Every comparison in a table is one paired difference a - b over seeds, with a two-sided
    p-value for "the mean difference is 0" (paired t-test, or a percentile bootstrap of the
    mean difference), and all the comparisons in the table are one family for Holm's step-down
    procedure (Holm 1979) at alpha = 1 - confidence (0.05 by default). Sort the comparisons by
    raw p-value, smallest first (ties keep the table's order; a comparison without a p-value,
    from a single seed, goes last). The comparison at step i of m is judged on its Holm-adjusted
    p-value and on its interval at confidence 1 - alpha / (m - i + 1). It is "better" or "worse"
    only if its adjusted p-value is below alpha AND that interval excludes zero; which of the
    two follows from the side of zero the interval lies on and the metric's direction (lower is
    better for fd, kid and memorization; higher for precision, recall, density and coverage).
    Otherwise it is "no difference", and so is every comparison after it (Holm's stop rule),
    even where its own interval excludes zero; those later comparisons show their interval at
    the level of that first step that failed.

With the t method the two conditions agree (the interval at 1 - alpha / (m - i + 1) excludes
zero exactly when p < alpha / (m - i + 1)); with the bootstrap they can disagree near the edge, and
then both must hold. The adjusted intervals show each comparison at the level Holm tests it at;
they are not simultaneous intervals for the whole table (for that, read every comparison at the
step-1 level, 1 - alpha / m, which is Bonferroni's).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
from scipy import stats

T = "t"
BOOTSTRAP = "bootstrap"
METHODS = (T, BOOTSTRAP)

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no difference"

# The study's metrics where a lower value is the better one; every other metric is better higher.
LOWER_IS_BETTER = frozenset({"fd", "kid", "memorization"})

# Shown for a bound that cannot be computed (a single seed).
MISSING = "–"

# A difference whose values differ by less than this, relative to their size, has no variance:
# floating point noise in a - b must not turn into a t statistic of 10^15.
_FLAT = 1e-12


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval; p_value is two-sided for "the mean is 0", or None
    where no test was made (a plain mean), or NaN where one could not be (a single seed)."""

    estimate: float
    low: float
    high: float
    n: int
    p_value: Optional[float]
    confidence: float
    method: str

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def band(self) -> tuple[float, float, float]:
        """(estimate, low, high): a point of a curve as plots.curves_png draws it with a band."""
        return (self.estimate, self.low, self.high)


@dataclass(frozen=True)
class Comparison:
    """One row of a comparison table: a - b for one metric, before and after Holm's adjustment."""

    label: str
    metric: str
    interval: Interval
    adjusted_interval: Interval
    adjusted_p: float
    verdict: str


def _values(values, name: str = "values") -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per seed), got shape {array.shape}")
    return array


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


def _is_flat(values: np.ndarray) -> bool:
    return float(np.ptp(values)) <= _FLAT * float(np.max(np.abs(values)))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student-t interval for the mean over seeds; NaNs are dropped. One value gives NaN bounds."""
    _check_confidence(confidence)
    array = _values(values)
    array = array[~np.isnan(array)]
    n = len(array)
    if n == 0:
        raise ValueError("mean_interval needs at least one value that is not NaN")
    mean = float(array.mean())
    if n == 1:
        low = high = math.nan
    elif _is_flat(array):
        low = high = mean
    else:
        low, high = (float(x) for x in stats.ttest_1samp(array, 0.0).confidence_interval(confidence))
    return Interval(mean, low, high, n, None, confidence, T)


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, method: str = T,
                      repeats: int = 10_000, seed: int = 0) -> Interval:
    """Interval for mean(a - b), paired by position; a pair with a NaN on either side is dropped.

    method "t": the paired t interval and the paired t-test's p-value. method "bootstrap": the
    percentile interval of `repeats` resampled mean differences (numpy Generator seeded with `seed`)
    and p = 2 * min(share of resampled means <= 0, share >= 0), at least 1 / repeats.
    Differences without variance are exact: all zero gives [0, 0] with p = 1, all equal to d != 0
    gives [d, d] with p = 0.
    """
    _check_confidence(confidence)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    a, b = _values(a, "a"), _values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must pair up by position, got {len(a)} and {len(b)} values")
    differences = (a - b)[~(np.isnan(a) | np.isnan(b))]
    n = len(differences)
    if n == 0:
        raise ValueError("paired_difference needs at least one pair where neither value is NaN")
    mean = float(differences.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, math.nan, confidence, method)
    if _is_flat(differences):
        return Interval(mean, mean, mean, n, 1.0 if mean == 0 else 0.0, confidence, method)
    if method == T:
        result = stats.ttest_1samp(differences, 0.0)
        low, high = (float(x) for x in result.confidence_interval(confidence))
        return Interval(mean, low, high, n, float(result.pvalue), confidence, method)
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, n, size=(repeats, n))].mean(axis=1)
    alpha = 1 - confidence
    low, high = (float(x) for x in np.quantile(means, [alpha / 2, 1 - alpha / 2]))
    p_value = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return Interval(mean, low, high, n, max(p_value, 1 / repeats), confidence, method)


def _holm_order(p_values: np.ndarray) -> np.ndarray:
    """Smallest p first, ties in the given order, missing (NaN) p-values last."""
    return np.argsort(np.where(np.isnan(p_values), np.inf, p_values), kind="stable")


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given.

    The i-th smallest of m gets max over j <= i of (m - j + 1) * p_(j), capped at 1, so the
    adjusted values never decrease along the steps. A NaN p-value counts in m, goes last, and
    stays NaN.
    """
    p = _values(p_values, "p_values")
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p[(p < 0) | (p > 1)].tolist()}")
    m = len(p)
    order = _holm_order(p)
    stepped = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted


def _lower_is_better(metric: str, directions: Union[Mapping[str, bool], Iterable[str]]) -> bool:
    if isinstance(directions, str):
        raise TypeError("lower_is_better must be a mapping or a set of metric names, not a string")
    if isinstance(directions, Mapping):
        if metric not in directions:
            raise ValueError(f"no direction for metric {metric!r}: say whether lower is better")
        return bool(directions[metric])
    return metric in directions


def compare(rows: Iterable[tuple[str, str, Sequence[float], Sequence[float]]], *,
            lower_is_better: Union[Mapping[str, bool], Iterable[str]], confidence: float = 0.95,
            method: str = T, repeats: int = 10_000, seed: int = 0) -> list[Comparison]:
    """Judge every row (label, metric, a_values, b_values) as a - b, the whole table one Holm family.

    lower_is_better maps each metric to whether lower is better, or is the set of metrics where it
    is (LOWER_IS_BETTER holds the study's). The verdict rule is the one in the module docstring.
    Comparisons come back in the order of the rows.
    """
    _check_confidence(confidence)
    rows = [(label, metric, a, b) for label, metric, a, b in rows]
    if isinstance(lower_is_better, Iterable) and not isinstance(lower_is_better, (Mapping, str)):
        lower_is_better = frozenset(lower_is_better)
    lower = [_lower_is_better(metric, lower_is_better) for _, metric, _, _ in rows]

    def difference(row, level):
        return paired_difference(row[2], row[3], confidence=level, method=method, repeats=repeats, seed=seed)

    raw = [difference(row, confidence) for row in rows]
    p_values = np.array([r.p_value for r in raw], dtype=float)
    adjusted_p = holm(p_values)
    alpha = 1 - confidence
    m = len(rows)
    comparisons: list[Optional[Comparison]] = [None] * m
    failed_level: Optional[float] = None
    for step, index in enumerate(_holm_order(p_values), start=1):
        level = failed_level if failed_level is not None else 1 - alpha / (m - step + 1)
        adjusted = difference(rows[index], level)
        verdict = NO_DIFFERENCE
        if failed_level is None and adjusted_p[index] < alpha and adjusted.excludes_zero:
            a_is_lower = adjusted.high < 0
            verdict = BETTER if a_is_lower == lower[index] else WORSE
        elif failed_level is None:
            failed_level = level
        label, metric = rows[index][:2]
        comparisons[index] = Comparison(label, metric, raw[index], adjusted, float(adjusted_p[index]), verdict)
    return comparisons


def _number(value: float, digits: int, signed: bool) -> str:
    if value is None or math.isnan(value):
        return MISSING
    if round(value, digits) == 0:
        value = 0.0  # no "-0.000"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def format_interval(interval: Interval, digits: int = 3, signed: bool = False) -> str:
    """'0.412 [0.380, 0.444]', or with signed=True '+0.032 [-0.010, +0.074]'; a missing bound is '–'."""
    return (f"{_number(interval.estimate, digits, signed)} "
            f"[{_number(interval.low, digits, signed)}, {_number(interval.high, digits, signed)}]")
