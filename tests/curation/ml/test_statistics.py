"""Intervals over seeds, paired differences and Holm-adjusted verdicts agree with scipy and with Holm's rule;
curves draw interval bands."""

import math
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from scipy import stats  # noqa: E402

from curation.ml import plots  # noqa: E402
from curation.ml.statistics import (  # noqa: E402
    LOWER_IS_BETTER,
    Interval,
    compare,
    format_interval,
    holm,
    mean_interval,
    paired_difference,
)

SEEDS = [0.412, 0.380, 0.444, 0.401, 0.425]


def differences_with_p(p: float, n: int = 6, sign: float = 1.0) -> np.ndarray:
    """n differences whose paired t-test gives exactly the two-sided p-value p."""
    noise = np.linspace(-1.0, 1.0, n)
    t = stats.t.isf(p / 2, n - 1)
    return sign * t * noise.std(ddof=1) / math.sqrt(n) + noise


def row(label, metric, p, sign=1.0, n=6):
    baseline = np.linspace(10.0, 20.0, n)
    return (label, metric, baseline + differences_with_p(p, n, sign), baseline)


# Means over seeds


def test_the_mean_interval_is_students_t_over_seeds():
    interval = mean_interval(SEEDS)
    low, high = stats.t.interval(0.95, len(SEEDS) - 1, loc=np.mean(SEEDS), scale=stats.sem(SEEDS))
    assert interval.estimate == pytest.approx(np.mean(SEEDS))
    assert (interval.low, interval.high) == pytest.approx((low, high))
    assert interval.n == 5 and interval.p_value is None and interval.method == "t" and interval.confidence == 0.95


def test_a_higher_confidence_gives_a_wider_mean_interval():
    narrow, wide = mean_interval(SEEDS, confidence=0.9), mean_interval(SEEDS, confidence=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_the_mean_interval_drops_nans():
    assert mean_interval([*SEEDS, np.nan, None]) == mean_interval(SEEDS)


def test_one_seed_gives_a_mean_without_bounds():
    interval = mean_interval([0.5, np.nan])
    assert interval.estimate == 0.5 and interval.n == 1
    assert math.isnan(interval.low) and math.isnan(interval.high)


def test_no_values_is_an_error_that_says_so():
    with pytest.raises(ValueError, match="at least one value"):
        mean_interval([])
    with pytest.raises(ValueError, match="at least one value"):
        mean_interval([np.nan, np.nan])


def test_seeds_that_all_agree_give_a_point_interval_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interval = mean_interval([10.0, 10.0, 10.0])
    assert (interval.estimate, interval.low, interval.high) == (10.0, 10.0, 10.0)


# Paired differences


def test_the_paired_difference_is_the_paired_t_test():
    a = np.array([31.0, 28.5, 35.2, 30.1, 29.9])
    b = np.array([33.4, 30.0, 35.0, 33.8, 31.2])
    interval = paired_difference(a, b)
    d = a - b
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert interval.estimate == pytest.approx(d.mean())
    assert (interval.low, interval.high) == pytest.approx((low, high))
    assert interval.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert interval.n == 5


def test_pairs_with_a_nan_on_either_side_are_dropped():
    a = [1.0, 2.0, np.nan, 4.0, 5.5, 6.0]
    b = [0.5, 1.0, 3.0, np.nan, 4.0, 4.1]
    interval = paired_difference(a, b)
    assert interval.n == 4
    assert interval.estimate == pytest.approx(np.mean([0.5, 1.0, 1.5, 1.9]))
    assert interval.p_value == pytest.approx(stats.ttest_rel([1.0, 2.0, 5.5, 6.0], [0.5, 1.0, 4.0, 4.1]).pvalue)


def test_values_that_do_not_pair_up_are_an_error():
    with pytest.raises(ValueError, match="pair up"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="neither value is NaN"):
        paired_difference([np.nan, 1.0], [1.0, np.nan])


def test_a_single_pair_has_no_bounds_and_no_p_value():
    interval = paired_difference([1.0, np.nan], [0.0, 2.0])
    assert interval.estimate == 1.0 and interval.n == 1
    assert math.isnan(interval.low) and math.isnan(interval.high) and math.isnan(interval.p_value)


@pytest.mark.parametrize("method", ["t", "bootstrap"])
def test_identical_runs_differ_by_exactly_zero(method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interval = paired_difference([3.0, 4.0, 5.0], [3.0, 4.0, 5.0], method=method)
    assert (interval.estimate, interval.low, interval.high, interval.p_value) == (0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize("method", ["t", "bootstrap"])
def test_a_constant_nonzero_difference_is_certain(method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interval = paired_difference([1.1, 2.1, 3.1], [1.0, 2.0, 3.0], method=method)  # a - b is 0.1 give or take 1e-16
    assert interval.estimate == pytest.approx(0.1)
    assert interval.low == interval.high == interval.estimate
    assert interval.p_value == 0.0


def test_the_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    b = rng.normal(size=12)
    a = b + 0.3 + rng.normal(size=12)
    first = paired_difference(a, b, method="bootstrap", seed=7)
    again = paired_difference(a, b, method="bootstrap", seed=7)
    other = paired_difference(a, b, method="bootstrap", seed=8)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.method == "bootstrap" and first.low < first.estimate < first.high


def test_the_bootstrap_p_value_is_floored_at_one_over_the_repeats():
    interval = paired_difference([5.0, 6.0, 7.5, 8.0, 9.0], [1.0, 1.5, 2.0, 2.0, 3.0], method="bootstrap", repeats=500)
    assert interval.p_value == pytest.approx(1 / 500)


def test_the_bootstrap_p_value_is_large_when_the_differences_straddle_zero():
    interval = paired_difference([1.0, -1.0, 2.0, -2.0, 0.5, -0.4], [0.0] * 6, method="bootstrap")
    assert interval.p_value > 0.5 and interval.low < 0 < interval.high


@pytest.mark.parametrize("method", ["t", "bootstrap"])
def test_the_interval_covers_the_true_mean_difference_most_of_the_time(method):
    rng = np.random.default_rng(2024)
    trials, covered = 200, 0
    for trial in range(trials):
        b = rng.normal(size=20)
        a = b + 0.5 + rng.normal(size=20)
        interval = paired_difference(a, b, method=method, repeats=2000, seed=trial)
        covered += interval.low <= 0.5 <= interval.high
    # Nominal 95%: a percentile bootstrap at n = 20 undercovers a little, never to below 88%.
    assert 0.88 <= covered / trials <= 0.995


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="method"):
        paired_difference([1.0, 2.0], [0.0, 0.0], method="z")
    with pytest.raises(ValueError, match="confidence"):
        paired_difference([1.0, 2.0], [0.0, 0.0], confidence=95)


# Holm


def test_holm_adjusts_a_worked_example_in_the_given_order():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, then 0.04*1 = 0.04 raised to 0.06 (monotone).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one():
    assert holm([0.5, 0.6, 0.01]) == pytest.approx([1.0, 1.0, 0.03])


def test_holm_counts_a_missing_p_value_in_the_family_and_keeps_it_missing():
    adjusted = holm([0.01, np.nan, 0.02])
    assert adjusted[0] == pytest.approx(0.03) and adjusted[2] == pytest.approx(0.04) and math.isnan(adjusted[1])


def test_holm_of_one_p_value_is_that_p_value_and_of_none_is_empty():
    assert holm([0.2]) == pytest.approx([0.2])
    assert holm([]).shape == (0,)


def test_holm_refuses_what_is_not_a_p_value():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])


# Comparison tables


def test_a_lower_fd_is_better_and_a_lower_precision_worse():
    table = compare(
        [row("fd down", "fd", 0.001, sign=-1.0), row("precision down", "precision", 0.001, sign=-1.0),
         row("recall up", "recall", 0.001), row("memorization up", "memorization", 0.001)],
        lower_is_better=LOWER_IS_BETTER,
    )
    assert [c.verdict for c in table] == ["better", "worse", "better", "worse"]
    assert [c.label for c in table] == ["fd down", "precision down", "recall up", "memorization up"]


def test_directions_can_be_given_as_a_mapping_and_a_missing_one_is_an_error():
    table = compare([row("fd down", "fd", 0.001, sign=-1.0)], lower_is_better={"fd": False})
    assert table[0].verdict == "worse"
    with pytest.raises(ValueError, match="no direction for metric 'kid'"):
        compare([row("kid", "kid", 0.001)], lower_is_better={"fd": True})


def test_a_comparison_judged_alone_can_be_lost_in_a_larger_table():
    alone = compare([row("fd", "fd", 0.03, sign=-1.0)], lower_is_better=LOWER_IS_BETTER)
    assert alone[0].verdict == "better" and alone[0].adjusted_p == pytest.approx(0.03)
    table = compare([row("fd", "fd", 0.03, sign=-1.0), row("recall", "recall", 0.2)], lower_is_better=LOWER_IS_BETTER)
    # Two comparisons: 0.03 is the first step and needs p < 0.025.
    assert table[0].verdict == "no difference" and table[0].adjusted_p == pytest.approx(0.06)
    assert table[0].interval.excludes_zero and not table[0].adjusted_interval.excludes_zero


def test_holms_stop_rule_silences_every_step_after_the_first_that_fails():
    table = compare(
        [row("last", "recall", 0.04), row("first", "fd", 0.001, sign=-1.0), row("second", "recall", 0.03)],
        lower_is_better=LOWER_IS_BETTER,
    )
    last, first, second = table
    assert first.verdict == "better" and first.adjusted_p == pytest.approx(0.003)
    assert first.adjusted_interval.confidence == pytest.approx(1 - 0.05 / 3) and first.adjusted_interval.excludes_zero
    # Step 2 needs p < 0.025 and fails; step 3 would pass on its own (0.04 < 0.05) but Holm has stopped.
    assert second.verdict == "no difference" and second.adjusted_p == pytest.approx(0.06)
    assert last.verdict == "no difference" and last.adjusted_p == pytest.approx(0.06)
    assert last.interval.excludes_zero and last.interval.confidence == 0.95
    assert second.adjusted_interval.confidence == pytest.approx(0.975)
    assert last.adjusted_interval.confidence == pytest.approx(0.975)
    assert not last.adjusted_interval.excludes_zero


def test_the_first_step_is_judged_at_bonferronis_level_and_the_last_at_the_plain_one():
    second, first = compare([row("second", "fd", 0.002), row("first", "fd", 0.001)], lower_is_better=LOWER_IS_BETTER)
    assert first.adjusted_interval.confidence == pytest.approx(0.975)
    assert first.adjusted_interval.low < first.interval.low and first.adjusted_interval.high > first.interval.high
    assert second.adjusted_interval == second.interval
    assert first.adjusted_interval.estimate == first.interval.estimate


def test_a_single_seed_row_counts_in_the_family_and_is_no_difference():
    baseline = [1.0, np.nan, np.nan]
    table = compare([row("fd", "fd", 0.03, sign=-1.0), ("one seed", "fd", [0.0, 1.0, 2.0], baseline)],
                    lower_is_better=LOWER_IS_BETTER)
    assert table[0].adjusted_p == pytest.approx(0.06) and table[0].verdict == "no difference"
    assert table[1].verdict == "no difference" and math.isnan(table[1].adjusted_p)


def test_the_bootstrap_table_finds_a_clear_difference_and_is_reproducible():
    rows = [row("fd", "fd", 0.0001, sign=-1.0, n=8), row("recall", "recall", 0.5, n=8)]
    table = compare(rows, lower_is_better=LOWER_IS_BETTER, method="bootstrap", seed=3)
    assert [c.verdict for c in table] == ["better", "no difference"]
    assert table[0].adjusted_interval.method == "bootstrap"
    assert table == compare(rows, lower_is_better=LOWER_IS_BETTER, method="bootstrap", seed=3)


def test_an_empty_table_is_empty():
    assert compare([], lower_is_better=LOWER_IS_BETTER) == []


# Formatting


def test_an_interval_reads_estimate_then_bounds():
    interval = Interval(0.4123, 0.38, 0.4441, 5, None, 0.95, "t")
    assert format_interval(interval) == "0.412 [0.380, 0.444]"
    assert format_interval(interval, digits=1) == "0.4 [0.4, 0.4]"


def test_a_difference_reads_with_its_signs():
    interval = Interval(0.032, -0.010, 0.074, 5, 0.1, 0.95, "t")
    assert format_interval(interval, signed=True) == "+0.032 [-0.010, +0.074]"
    assert format_interval(Interval(-0.0001, -0.0002, 0.0, 5, 0.5, 0.95, "t"), signed=True) == "+0.000 [+0.000, +0.000]"


def test_missing_bounds_read_as_a_dash():
    assert format_interval(mean_interval([0.5])) == "0.500 [–, –]"


# Curves with bands


def test_curves_with_interval_bands_and_a_reference_band_are_a_png():
    series = {
        "fully-synthetic/none": [(1.0, 0.8, 1.2), (2.0, 1.5, 2.5), (3.0, np.nan, np.nan)],
        "fully-synthetic/human": [mean_interval([1.0, 1.1, 0.9]).band, (1.5, 1.2, 1.8), (np.nan, np.nan, np.nan)],
    }
    png = plots.curves_png("fd", series, reference=(0.5, 0.4, 0.6), reference_label="real vs real")
    assert png.startswith(b"\x89PNG")


def test_curves_with_a_spread_and_a_reference_line_still_draw():
    png = plots.curves_png("fd", {"v": [(1.0, 0.1), (np.nan, 0.0)]}, reference=np.float64(0.5), reference_label="floor")
    assert png.startswith(b"\x89PNG")
    assert plots.panel_png(["fd", "recall"], {"fd": {"v": [(1.0, 0.8, 1.2)]}, "recall": {"v": [(0.5, 0.1)]}},
                           references={"fd": (0.5, 0.4, 0.6)}).startswith(b"\x89PNG")


def test_the_band_spans_the_interval_and_the_reference_band_its_bounds():
    figure, axes = plt.subplots()
    try:
        plots._draw(axes, "fd", {"v": [(1.0, 0.8, 1.2), (2.0, 1.5, 2.6)]}, (0.5, 0.4, 0.6), "floor")
        bands = [c for c in axes.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 1
        y = bands[0].get_paths()[0].vertices[:, 1]
        assert (y.min(), y.max()) == pytest.approx((0.8, 2.6))
        assert bands[0].get_alpha() == pytest.approx(0.15)
        (span,) = axes.patches  # axhspan: a rectangle, y in data coordinates
        assert (span.get_y(), span.get_y() + span.get_height()) == pytest.approx((0.4, 0.6))
        (reference,) = [line for line in axes.lines if line.get_label() == "floor"]
        assert reference.get_ydata()[0] == pytest.approx(0.5)
    finally:
        plt.close(figure)


def test_a_point_that_is_neither_a_spread_nor_an_interval_is_refused():
    with pytest.raises(ValueError, match="mean, low, high"):
        plots.curves_png("fd", {"v": [(1.0, 0.8, 1.2, 9.0)]})
