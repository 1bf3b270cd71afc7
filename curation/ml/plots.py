"""Metric curves over generations as PNG images, drawn locally with matplotlib (Agg, no display)."""

from __future__ import annotations

import io
from typing import Optional, Sequence, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

# The curves every experiment and study plots over generations.
CURVE_METRICS = ("fd", "precision", "recall", "coverage", "classes_covered", "acceptance_rate")

LABELS = {
    "fd": "Fréchet distance (lower is better)",
    "precision": "precision (quality)",
    "recall": "recall (diversity)",
    "density": "density",
    "coverage": "coverage",
    "classes_covered": "classes covered (>2% of samples)",
    "acceptance_rate": "acceptance rate",
    "discriminator_auc": "discriminator AUC (held-out votes)",
}

# One curve: a point per generation, either (mean, spread), drawn as mean ± spread, or (mean, low, high),
# an interval (e.g. statistics.Interval.band) drawn as a band; NaN for generations without a value.
Point = Union[tuple[float, float], tuple[float, float, float]]
Curve = Sequence[Point]
# A reference level: a line, or (mean, low, high) for a line inside a grey band.
Reference = Union[float, tuple[float, float, float]]


def _band(points: Curve) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """mean, low, high per point, and whether any point was an interval rather than a spread."""
    mean, low, high = (np.full(len(points), np.nan) for _ in range(3))
    intervals = False
    for i, point in enumerate(points):
        if len(point) == 3:
            mean[i], low[i], high[i] = point
            intervals = True
        elif len(point) == 2:
            mean[i] = point[0]
            low[i], high[i] = point[0] - point[1], point[0] + point[1]
        else:
            raise ValueError(f"a curve point is (mean, spread) or (mean, low, high), got {point!r}")
    return mean, low, high, intervals


def _draw(axes, metric: str, series: dict[str, Curve], reference: Optional[Reference], reference_label: str) -> None:
    colours = plt.get_cmap("tab20" if len(series) > 10 else "tab10")
    for n, (name, points) in enumerate(series.items()):
        mean, low, high, intervals = _band(points)
        x = np.arange(len(points))
        style = "--" if "guard" in name else "-"
        axes.plot(x, mean, style, marker="o", markersize=3, color=colours(n % colours.N), label=name)
        if np.any(high > low):
            axes.fill_between(x, low, high, color=colours(n % colours.N), alpha=0.15 if intervals else 0.12,
                              linewidth=0)
    if reference is not None:
        if np.ndim(reference) == 0:
            level, low, high = float(reference), np.nan, np.nan
        else:
            level, low, high = (float(v) for v in reference)
        if np.isfinite(low) and np.isfinite(high):
            axes.axhspan(low, high, color="grey", alpha=0.15, linewidth=0)
        axes.axhline(level, color="grey", linestyle=":", linewidth=1, label=reference_label)
    axes.set_title(LABELS.get(metric, metric), fontsize=10)
    axes.set_xlabel("generation")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def curves_png(metric: str, series: dict[str, Curve], *, reference: Optional[Reference] = None,
               reference_label: str = "") -> bytes:
    """One metric, a curve per series (e.g. per study variant), each with its spread or interval band,
    and an optional reference line (or band)."""
    figure, axes = plt.subplots(figsize=(9, 5))
    _draw(axes, metric, series, reference, reference_label)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return _png(figure)


def panel_png(metrics: Sequence[str], series_by_metric: dict[str, dict[str, Curve]], *,
              references: Optional[dict[str, Reference]] = None, reference_label: str = "") -> bytes:
    """Several metrics side by side, three to a row (e.g. one experiment's curves)."""
    references = references or {}
    rows = -(-len(metrics) // 3)
    figure, grid = plt.subplots(rows, 3, figsize=(12, 3.3 * rows), squeeze=False)
    for axes, metric in zip(grid.flat, metrics):
        _draw(axes, metric, series_by_metric[metric], references.get(metric), reference_label)
    for axes in list(grid.flat)[len(metrics):]:
        axes.set_visible(False)
    handles, labels = grid.flat[0].get_legend_handles_labels()
    if len(labels) > 1:
        figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8)
    figure.tight_layout(rect=(0, 0.05 if len(labels) > 1 else 0, 1, 1))
    return _png(figure)
