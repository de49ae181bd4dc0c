"""Predicted vs measured (issue 12): every metric against a computation written here independently (plain
Python and the statistics module, scipy for one cross-check), censored values, log-space rules, the within
shares, the confidence split, accuracy over time, edge cases, and the PNG figures."""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
import struct
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from scipy import stats

from services.cro.adapters import plots
from services.cro.domain.comparison import (
    Comparison,
    PairStatus,
    PredictionPair,
    Qualifier,
    ReviewedResult,
    Scale,
    WithinRule,
    accuracy_over_time,
    compare,
    parse_qualifier,
    scale_of,
)
from services.runtime.errors import ValidationError

Row = tuple[float, float | None, float, str]  # predicted, confidence, measured, qualifier

# --- independent reference computations (no code shared with the module) ------------------------------


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, tied values sharing the mean of the positions they occupy."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            result[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return result


def reference(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    errors = [p - m for p, m in zip(predicted, measured, strict=True)]
    mean_measured = statistics.fmean(measured)
    return {
        "mae": statistics.fmean(abs(e) for e in errors),
        "rmse": math.sqrt(statistics.fmean(e * e for e in errors)),
        "bias": statistics.fmean(errors),
        "r2": 1 - sum(e * e for e in errors) / sum((m - mean_measured) ** 2 for m in measured),
        "spearman": statistics.correlation(ranks(predicted), ranks(measured)),
    }


def pairs_of(
    prop: str,
    rows: Sequence[Row],
    *,
    model: str = "chemprop",
    version: str = "1.0",
    units: str = "",
) -> list[PredictionPair]:
    """rows: (predicted, confidence, measured, qualifier)."""
    return [
        PredictionPair(f"mol-{i}", prop, model, version, predicted, confidence, measured, Qualifier(q), units)
        for i, (predicted, confidence, measured, q) in enumerate(rows)
    ]


def only(pairs: Sequence[PredictionPair]) -> Comparison:
    (comparison,) = compare(pairs)
    return comparison


def floats_in(value: Any) -> list[float]:
    """Every float anywhere in a result (dataclasses, mappings, sequences), to prove no NaN leaks."""
    if isinstance(value, float):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [f for item in dataclasses.fields(value) for f in floats_in(getattr(value, item.name))]
    if isinstance(value, Mapping):
        return [f for item in value.values() for f in floats_in(item)]
    if isinstance(value, (list, tuple)):
        return [f for item in value for f in floats_in(item)]
    return []


def assert_no_nan(value: Any) -> None:
    assert all(math.isfinite(f) for f in floats_in(value))


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the PNG signature and the IHDR chunk (always the first)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


# --- metrics ---------------------------------------------------------------------------------------------


def test_linear_metrics_equal_an_independent_computation_with_ties() -> None:
    generator = random.Random(12)
    measured = [round(generator.uniform(5, 95)) for _ in range(60)]  # rounded: ties in both columns
    predicted = [round(m + generator.gauss(3, 12)) for m in measured]
    rows = [(p, 0.5, m, "=") for p, m in zip(predicted, measured, strict=True)]
    comparison = only(pairs_of("bioavailability", rows, units="%"))
    metrics = comparison.summary.metrics
    expected = reference(predicted, measured)
    assert comparison.scale is Scale.LINEAR and comparison.units == "%"
    assert metrics.n == 60 and metrics.undefined == {}
    for name, value in expected.items():
        assert getattr(metrics, name) == pytest.approx(value, rel=1e-12), name
    assert metrics.spearman == pytest.approx(stats.spearmanr(predicted, measured).statistic, rel=1e-12)
    assert metrics.bias > 0  # the noise was centred on +3: the model predicts too high


def test_r2_is_negative_when_predictions_are_worse_than_the_measured_mean() -> None:
    comparison = only(pairs_of("logp", [(3.0, None, 1.0, "="), (1.0, None, 3.0, "=")]))
    # Σe² = 8, Σ(m − 2)² = 2 → R² = 1 − 4
    assert comparison.summary.metrics.r2 == pytest.approx(-3.0)
    assert comparison.summary.metrics.spearman == pytest.approx(-1.0)


def test_log_scaled_properties_are_compared_in_log10_and_skip_non_positive_values() -> None:
    rows = [
        (100.0, 0.9, 10.0, "="),  # error +1
        (5.0, 0.8, 50.0, "="),  # error −1
        (30.0, 0.7, 20.0, "="),
        (7.0, 0.6, 7.0, "="),  # error 0
        (0.0, 0.5, 8.0, "="),  # no log: left out
        (12.0, 0.5, -1.0, "="),  # no log: left out
    ]
    comparison = only(pairs_of("ic50", rows, units="nM"))
    assert comparison.scale is Scale.LOG10
    kept = rows[:4]
    expected = reference([math.log10(r[0]) for r in kept], [math.log10(r[2]) for r in kept])
    metrics = comparison.summary.metrics
    assert metrics.n == 4 and comparison.summary.not_positive == 2
    for name, value in expected.items():
        assert getattr(metrics, name) == pytest.approx(value, rel=1e-12), name
    first = comparison.pairs[0]
    assert first.log10_difference == pytest.approx(1.0) and first.error == pytest.approx(1.0)
    assert (first.difference, first.abs_difference, first.relative_difference) == (90.0, 90.0, 9.0)
    skipped = comparison.pairs[4]
    assert skipped.status is PairStatus.NOT_POSITIVE and skipped.error is None and skipped.log10_difference is None
    assert skipped.difference == -8.0  # the raw difference is still reported
    assert comparison.pairs[5].relative_difference == pytest.approx(13.0)  # 13 / |−1|


def test_which_properties_are_log_scaled() -> None:
    for name in ("ic50", "ec50", "binding_affinity", "solubility", "permeability", "clearance", "half_life"):
        assert scale_of(name) is Scale.LOG10
    for name in ("logp", "logd", "pka", "pkb"):
        assert scale_of(name) is Scale.LOG_UNITS
    for name in ("bioavailability", "melting_point", "custom_potency"):
        assert scale_of(name) is Scale.LINEAR


def test_within_half_a_log_unit_counts_the_boundary() -> None:
    rows = [
        (10 * 10**0.5, None, 10.0, "="),  # exactly +0.5: within
        (1.0, None, 10**0.5, "="),  # exactly −0.5: within
        (1.0, None, 4.0, "="),  # −0.60: outside
        (100.0, None, 99.0, "="),
    ]
    within = only(pairs_of("solubility", rows)).summary.within
    assert (within.rule, within.within, within.counted, within.share) == (WithinRule.HALF_LOG_UNIT, 3, 4, 0.75)
    # logp is a logarithm already: ±0.5 on the values themselves, negatives allowed
    logp = only(pairs_of("logp", [(-1.0, None, -1.5, "="), (2.0, None, 2.6, "="), (0.0, None, 0.1, "=")]))
    assert (logp.summary.within.within, logp.summary.within.counted) == (2, 3)


def test_linear_properties_use_two_fold_over_positive_pairs_only() -> None:
    rows = [
        (2.0, None, 1.0, "="),  # ×2: within
        (5.0, None, 10.0, "="),  # ÷2: within
        (21.0, None, 10.0, "="),  # ×2.1: outside
        (0.0, None, 5.0, "="),  # a fold of 0 means nothing: not counted
        (-3.0, None, 4.0, "="),
    ]
    comparison = only(pairs_of("bioavailability", rows))
    within = comparison.summary.within
    assert (within.rule, within.within, within.counted) == (WithinRule.TWO_FOLD, 2, 3)
    assert within.share == pytest.approx(2 / 3)
    assert comparison.summary.metrics.n == 5  # they still count in the metrics


# --- censored, approximate, bad values -------------------------------------------------------------------


def test_censored_measurements_are_classified_not_averaged() -> None:
    rows = [
        (5.0, 0.9, 10.0, "<"),  # consistent
        (10.0, 0.9, 10.0, "<"),  # the bound itself: consistent
        (12.0, 0.9, 10.0, "<"),  # inconsistent
        (500.0, 0.9, 100.0, ">"),  # consistent
        (50.0, 0.9, 100.0, ">"),  # inconsistent
        (20.0, 0.9, 10.0, "="),
        (40.0, 0.9, 40.0, "~"),
    ]
    comparison = only(pairs_of("ec50", rows, units="nM"))
    statuses = [p.status for p in comparison.pairs]
    assert statuses == [
        PairStatus.CENSORED_CONSISTENT,
        PairStatus.CENSORED_CONSISTENT,
        PairStatus.CENSORED_INCONSISTENT,
        PairStatus.CENSORED_CONSISTENT,
        PairStatus.CENSORED_INCONSISTENT,
        PairStatus.INCLUDED,
        PairStatus.INCLUDED,
    ]
    summary = comparison.summary
    assert (summary.censored.consistent, summary.censored.inconsistent, summary.censored.total) == (3, 2, 5)
    assert summary.metrics.n == 2 and summary.approximate == 1
    expected = reference([math.log10(20), math.log10(40)], [math.log10(10), math.log10(40)])
    assert summary.metrics.mae == pytest.approx(expected["mae"])
    assert summary.within.counted == 2
    censored = comparison.pairs[0]
    assert (censored.difference, censored.relative_difference, censored.error) == (None, None, None)
    assert (censored.predicted, censored.measured, censored.qualifier) == (5.0, 10.0, Qualifier.LESS)


def test_only_censored_values_leave_every_metric_none_with_a_reason() -> None:
    comparison = only(pairs_of("ic50", [(5.0, 0.9, 10.0, "<"), (50.0, 0.2, 10.0, ">")]))
    metrics = comparison.summary.metrics
    assert metrics.n == 0
    assert (metrics.mae, metrics.rmse, metrics.r2, metrics.spearman, metrics.bias) == (None,) * 5
    assert set(metrics.undefined) == {"mae", "rmse", "r2", "spearman", "bias"}
    assert comparison.summary.within.share is None and comparison.summary.within.counted == 0
    assert comparison.summary.confidence.high is None and "high" in comparison.summary.confidence.undefined
    assert_no_nan(comparison)


def test_non_finite_inputs_and_unusable_confidences_are_dropped_and_counted() -> None:
    rows = [
        (math.nan, 0.5, 1.0, "="),
        (1.0, 0.5, math.inf, "="),
        (1.0, math.nan, 2.0, "="),
        (2.0, 1.5, 2.5, "="),
        (3.0, 0.3, 3.5, "="),
        (4.0, 0.8, 4.5, "="),
        (1e308, 0.8, -1e308, "="),  # the difference overflows
        (1.0, 0.8, 5e-324, "="),  # the relative difference overflows
    ]
    comparison = only(pairs_of("logd", rows))
    summary = comparison.summary
    assert summary.not_finite == 3 and summary.metrics.n == 5
    assert comparison.pairs[7].relative_difference is None and comparison.pairs[7].difference == 1.0
    assert comparison.pairs[0].predicted is None and comparison.pairs[1].measured is None
    assert [p.confidence for p in comparison.pairs[2:6]] == [None, None, 0.3, 0.8]
    assert summary.confidence.without_confidence == 2
    assert_no_nan(comparison)


def test_qualifiers_parse_and_a_bad_one_is_a_validation_error() -> None:
    assert [parse_qualifier(t) for t in ("<", " > ", "~", "=", "")] == [
        Qualifier.LESS,
        Qualifier.GREATER,
        Qualifier.APPROXIMATE,
        Qualifier.EQUAL,
        Qualifier.EQUAL,
    ]
    with pytest.raises(ValidationError) as error:
        parse_qualifier("<=")
    assert error.value.detail == "UNKNOWN_QUALIFIER"


def test_groups_by_property_and_model_version_and_refuses_mixed_units() -> None:
    pairs = [
        *pairs_of("solubility", [(1.0, None, 2.0, "=")], version="2.0", units="mg/mL"),
        *pairs_of("ic50", [(1.0, None, 2.0, "=")], version="1.0", units="nM"),
        *pairs_of("solubility", [(1.0, None, 2.0, "="), (3.0, None, 3.0, "=")], version="1.0", units="mg/mL"),
        *pairs_of("ic50", [(1.0, None, 2.0, "=")], model="admet-ai", version="1.0", units="nM"),
    ]
    keys = [(c.property, c.model_name, c.model_version, c.summary.metrics.n) for c in compare(pairs)]
    assert keys == [
        ("ic50", "admet-ai", "1.0", 1),
        ("ic50", "chemprop", "1.0", 1),
        ("solubility", "chemprop", "1.0", 2),
        ("solubility", "chemprop", "2.0", 1),
    ]
    assert compare([]) == []
    row = [(1.0, None, 2.0, "=")]
    mixed = pairs_of("ic50", row, units="nM") + pairs_of("ic50", row, units="µM")
    with pytest.raises(ValidationError) as error:
        compare(mixed)
    assert error.value.detail == "MIXED_UNITS"


# --- edge cases ------------------------------------------------------------------------------------------


def test_one_pair_has_errors_but_no_r2_or_rank_correlation() -> None:
    metrics = only(pairs_of("logp", [(2.5, 0.9, 2.0, "=")])).summary.metrics
    assert (metrics.n, metrics.mae, metrics.rmse, metrics.bias) == (1, 0.5, 0.5, 0.5)
    assert metrics.r2 is None and metrics.spearman is None
    assert set(metrics.undefined) == {"r2", "spearman"}


def test_constant_measured_or_predicted_values_give_none_never_nan() -> None:
    # 0.1 three times: a float mean of 0.1 + 0.1 + 0.1 is not 0.1, the variance must still count as zero
    flat_measured = only(pairs_of("logp", [(0.2, None, 0.1, "="), (0.3, None, 0.1, "="), (0.4, None, 0.1, "=")]))
    metrics = flat_measured.summary.metrics
    assert metrics.r2 is None and metrics.spearman is None and "equal" in metrics.undefined["r2"]
    assert metrics.mae == pytest.approx(0.2)
    flat_predicted = only(pairs_of("logp", [(1.0, None, 0.5, "="), (1.0, None, 1.5, "="), (1.0, None, 2.0, "=")]))
    metrics = flat_predicted.summary.metrics
    assert metrics.spearman is None and "spearman" in metrics.undefined
    mean_measured = (0.5 + 1.5 + 2.0) / 3
    expected = 1 - (0.25 + 0.25 + 1.0) / sum((m - mean_measured) ** 2 for m in (0.5, 1.5, 2.0))
    assert metrics.r2 == pytest.approx(expected)
    assert_no_nan(flat_measured)
    assert_no_nan(flat_predicted)


def test_relative_difference_is_none_when_measured_is_zero() -> None:
    pair = only(pairs_of("logp", [(0.3, None, 0.0, "=")])).pairs[0]
    assert (pair.difference, pair.abs_difference, pair.relative_difference) == (0.3, 0.3, None)
    negative = only(pairs_of("logp", [(-1.0, None, -2.0, "=")])).pairs[0]
    assert negative.relative_difference == pytest.approx(0.5)  # divided by |measured|


# --- confidence ------------------------------------------------------------------------------------------


def test_confidence_split_at_the_median_with_independent_group_errors() -> None:
    generator = random.Random(7)
    rows = []
    for _ in range(41):
        confidence = round(generator.random(), 2)
        measured = generator.uniform(-2, 5)
        noise = (1 - confidence) * generator.gauss(0, 2)  # confident predictions are closer
        rows.append((measured + noise, confidence, measured, "="))
    split = only(pairs_of("logp", rows)).summary.confidence
    median = statistics.median(r[1] for r in rows)
    high = [abs(r[0] - r[2]) for r in rows if r[1] >= median]
    low = [abs(r[0] - r[2]) for r in rows if r[1] < median]
    assert split.threshold == pytest.approx(median)
    assert split.high is not None and split.low is not None
    assert (split.high.n, split.low.n) == (len(high), len(low))
    assert split.high.mae == pytest.approx(statistics.fmean(high))
    assert split.low.mae == pytest.approx(statistics.fmean(low))
    assert split.high.rmse == pytest.approx(math.sqrt(statistics.fmean(e * e for e in high)))
    assert split.low.min_confidence < median <= split.high.min_confidence
    assert split.high.mae < split.low.mae  # confidence means something here, and the split shows it
    errors = [abs(r[0] - r[2]) for r in rows]
    expected = statistics.correlation(ranks([r[1] for r in rows]), ranks(errors))
    assert split.error_correlation == pytest.approx(expected) and expected < 0


def test_confidence_ties_at_the_median_keep_both_groups_non_empty() -> None:
    def groups(confidences: Sequence[float]) -> tuple[int, int]:
        rows = [(float(i), c, float(i) + 0.5 * i, "=") for i, c in enumerate(confidences)]
        split = only(pairs_of("logp", rows)).summary.confidence
        assert split.high is not None and split.low is not None
        return split.low.n, split.high.n

    assert groups([0.1, 0.5, 0.5, 0.5]) == (1, 3)  # ties at the median go high
    assert groups([0.1, 0.1, 0.1, 0.9]) == (3, 1)  # nothing below the median: ties go low
    assert groups([0.2, 0.4, 0.6, 0.8]) == (2, 2)
    flat = only(pairs_of("logp", [(1.0, 0.7, 2.0, "="), (2.0, 0.7, 2.5, "=")])).summary.confidence
    assert flat.high is None and flat.low is None and flat.threshold is None and "equal" in flat.undefined["high"]
    lonely = only(pairs_of("logp", [(1.0, 0.7, 2.0, "="), (2.0, None, 2.5, "=")])).summary.confidence
    assert lonely.high is None and lonely.without_confidence == 1


# --- accuracy over time ----------------------------------------------------------------------------------


def test_accuracy_over_time_orders_versions_by_first_use_and_pools_their_pairs() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)

    def result(result_id: str, days: int, version_rows: Mapping[str, list[Row]]) -> ReviewedResult:
        pairs = [p for v, rows in version_rows.items() for p in pairs_of("ic50", rows, version=v, units="nM")]
        return ReviewedResult(result_id, start + timedelta(days=days), compare(pairs))

    # "2026.1" sorts after "2025.9" as text but is used first: first use decides.
    first = [(100.0, 0.9, 10.0, "="), (10.0, 0.8, 20.0, "=")]
    second_old = [(30.0, 0.9, 10.0, "="), (5.0, 0.4, 40.0, "="), (8.0, 0.5, 10.0, "<")]
    second_new = [(12.0, 0.9, 10.0, "="), (35.0, 0.4, 40.0, "=")]
    third_new = [(60.0, 0.7, 50.0, "="), (2.0, 0.6, 2.5, "=")]
    results = [
        result("r3", 20, {"2025.9": third_new}),
        result("r1", 0, {"2026.1": first}),
        result("r2", 10, {"2026.1": second_old, "2025.9": second_new}),
    ]
    (model,) = accuracy_over_time(results)
    assert (model.model_name, model.property, model.units, model.scale) == ("chemprop", "ic50", "nM", Scale.LOG10)
    assert [v.model_version for v in model.versions] == ["2026.1", "2025.9"]
    older, newer = model.versions
    assert older.first_used == start and newer.first_used == start + timedelta(days=10)
    assert [r.result_id for r in older.results] == ["r1", "r2"]
    assert [r.result_id for r in newer.results] == ["r2", "r3"]

    def pooled_reference(rows: list[Row]) -> dict[str, float]:
        numeric = [r for r in rows if r[3] == "="]
        return reference([math.log10(r[0]) for r in numeric], [math.log10(r[2]) for r in numeric])

    for version, rows in ((older, first + second_old), (newer, second_new + third_new)):
        expected = pooled_reference(rows)
        for name, value in expected.items():
            assert getattr(version.overall.metrics, name) == pytest.approx(value, rel=1e-12), name
    assert older.overall.censored.consistent == 1 and older.overall.metrics.n == 4
    assert older.results[0].summary.metrics.n == 2 and older.results[1].summary.metrics.n == 2
    assert newer.overall.metrics.mae < older.overall.metrics.mae  # the newer version is better here
    assert accuracy_over_time([]) == []


# --- figures ---------------------------------------------------------------------------------------------


def figure_comparison(shift: float = 0.0, prop: str = "ic50") -> Comparison:
    rows = [
        (12.0 + shift, 0.9, 10.0, "="),
        (80.0, 0.6, 100.0, "="),
        (900.0, 0.3, 1000.0, "~"),
        (5.0, 0.5, 10.0, "<"),
        (50.0, 0.5, 10.0, "<"),
        (300.0, 0.5, 100.0, ">"),
        (0.0, 0.5, 10.0, "="),  # not drawable on a log axis
    ]
    return only(pairs_of(prop, rows, units="nM"))


def test_scatter_and_histogram_are_pngs_of_the_asked_size_and_follow_the_data() -> None:
    comparison = figure_comparison()
    scatter = plots.scatter_png(comparison, width=640, height=480)
    assert png_size(scatter) == (640, 480)
    assert plots.scatter_png(comparison, width=640, height=480) == scatter  # same data, same bytes
    assert plots.scatter_png(figure_comparison(shift=30.0), width=640, height=480) != scatter
    assert png_size(plots.scatter_png(comparison, width=300, height=300)) == (300, 300)
    histogram = plots.residual_histogram_png(comparison, width=500, height=320, bins=10)
    assert png_size(histogram) == (500, 320)
    assert plots.residual_histogram_png(comparison, width=500, height=320, bins=10) == histogram
    assert plots.residual_histogram_png(figure_comparison(shift=30.0), width=500, height=320, bins=10) != histogram
    assert histogram != scatter


def test_figures_of_linear_empty_and_awkwardly_named_comparisons() -> None:
    linear = figure_comparison(prop="bioavailability")
    assert png_size(plots.scatter_png(linear, width=400, height=400)) == (400, 400)
    empty = only([PredictionPair("m", "custom_$cost$", "m$1", "v_2^x", 5.0, None, 10.0, Qualifier.LESS, "$")])
    assert png_size(plots.scatter_png(empty, width=320, height=240)) == (320, 240)
    assert png_size(plots.residual_histogram_png(empty, width=320, height=240)) == (320, 240)
    one = only(pairs_of("ic50", [(10.0, 0.5, 10.0, "=")]))
    assert png_size(plots.scatter_png(one, width=320, height=240)) == (320, 240)


def test_figure_sizes_and_bins_are_bounded() -> None:
    comparison = figure_comparison()
    for width, height in ((plots.MIN_SIDE - 1, 400), (400, plots.MAX_SIDE + 1), (0, 0)):
        with pytest.raises(ValidationError):
            plots.scatter_png(comparison, width=width, height=height)
    with pytest.raises(ValidationError):
        plots.residual_histogram_png(comparison, bins=0)
    with pytest.raises(ValidationError):
        plots.residual_histogram_png(comparison, bins=plots.MAX_BINS + 1)
