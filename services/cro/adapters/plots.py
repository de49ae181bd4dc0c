"""PNG figures of a predicted-vs-measured comparison (issue 12): the scatter plot and the residual histogram.

Decisions:
- Drawn on a bare Figure with the Agg canvas, never pyplot: pyplot keeps global state that is not safe
  across the threads a service renders in, and Agg needs no display.
- Measured on x, predicted on y, raw values in the property's units; LOG10 properties on log axes (so
  pairs with a value ≤ 0 cannot be drawn and are counted under the plot). The identity line is solid;
  the dashed lines bound the "within" rule of the comparison (±0.5 log10 units, or 2-fold).
- Censored measurements are drawn at their bound as a hollow triangle pointing where the true value
  lies (`<` left, `>` right): grey when the prediction is consistent with them, red when not. They are
  not in the title's n and MAE, which are the comparison's numeric metrics.
- The residual histogram shows the metrics' own errors (log10 units for LOG10 properties), with 0 and
  the bias marked.
- Same comparison and size → same bytes (no timestamps; the Software tag is dropped so a matplotlib
  upgrade alone does not change them). Width and height are bounded: MIN_SIDE..MAX_SIDE pixels.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from services.cro.domain.comparison import (
    WITHIN_FOLD,
    WITHIN_LOG_UNITS,
    Comparison,
    PairOutcome,
    PairStatus,
    Qualifier,
    Scale,
)
from services.runtime.errors import ValidationError

PLOT_DPI = 100
MIN_SIDE = 200
MAX_SIDE = 2000
MAX_BINS = 100
MAX_TITLE_LENGTH = 90
_INCLUDED = "#3b7dd8"
_CONSISTENT = "#7f7f7f"
_INCONSISTENT = "#d8343b"


def scatter_png(comparison: Comparison, *, width: int = 640, height: int = 480) -> bytes:
    """Predicted vs measured with the identity line, width × height pixels."""
    figure, axes = _figure(width, height)
    log = comparison.scale is Scale.LOG10
    drawable = [p for p in comparison.pairs if _drawable(p, log)]
    hidden = len(comparison.pairs) - len(drawable)
    _points(axes, [p for p in drawable if p.status is PairStatus.INCLUDED], "o", _INCLUDED, "measured", filled=True)
    for status, colour, label in (
        (PairStatus.CENSORED_CONSISTENT, _CONSISTENT, "censored, consistent"),
        (PairStatus.CENSORED_INCONSISTENT, _INCONSISTENT, "censored, inconsistent"),
    ):
        for qualifier in (Qualifier.LESS, Qualifier.GREATER):
            chosen = [p for p in drawable if p.status is status and p.qualifier is qualifier]
            _points(axes, chosen, str(qualifier), colour, f"{label} ({qualifier})", filled=False)
    if drawable:
        values = np.array([v for p in drawable for v in (p.measured, p.predicted)], dtype=np.float64)
        _reference_lines(axes, float(values.min()), float(values.max()), comparison.scale)
        axes.legend(loc="upper left", fontsize="small")
    else:
        _empty(axes, "no pairs to draw")
    if log:
        axes.set_xscale("log")
        axes.set_yscale("log")
    not_drawn = ""
    if hidden:
        reason = "a value ≤ 0 on a log axis or not finite" if log else "not finite"
        not_drawn = f"\n{hidden} pair(s) not drawn: {reason}"
    axes.set_xlabel(_literal(f"measured {_named(comparison)}{not_drawn}"))
    axes.set_ylabel(_literal(f"predicted {_named(comparison)}"))
    metrics = comparison.summary.metrics
    mae = "n/a" if metrics.mae is None else f"{metrics.mae:.3g}" + (" log10" if log else "")
    axes.set_title(_title(comparison, f"n={metrics.n}, MAE={mae}"), fontsize="medium")
    return _png(figure)


def _drawable(pair: PairOutcome, log: bool) -> bool:
    if pair.predicted is None or pair.measured is None:
        return False
    return not log or (pair.predicted > 0 and pair.measured > 0)


def _points(axes: Axes, pairs: list[PairOutcome], marker: str, colour: str, label: str, *, filled: bool) -> None:
    if pairs:
        axes.scatter(
            np.array([p.measured for p in pairs], dtype=np.float64),
            np.array([p.predicted for p in pairs], dtype=np.float64),
            marker=marker,
            s=36,
            facecolors=colour if filled else "none",
            edgecolors=colour,
            linewidths=1.2,
            alpha=0.85,
            label=label,
            zorder=3,
        )


def residual_histogram_png(comparison: Comparison, *, width: int = 640, height: int = 480, bins: int = 20) -> bytes:
    """Histogram of predicted − measured over the numeric pairs (log10 units for LOG10 properties)."""
    if not 1 <= bins <= MAX_BINS:
        raise ValidationError(f"bins must be 1..{MAX_BINS}", field_violations=[("bins", f"1..{MAX_BINS}")])
    figure, axes = _figure(width, height)
    errors = np.array([p.error for p in comparison.pairs if p.error is not None], dtype=np.float64)
    if errors.size:
        counts, edges = np.histogram(errors, bins=bins)
        axes.stairs(counts, edges, fill=True, color=_INCLUDED, edgecolor="#1f4e8c")
        axes.axvline(0.0, color="black", linewidth=1)
        bias = float(errors.mean())
        axes.axvline(bias, color="#d8643b", linestyle="--", linewidth=1, label=f"bias {bias:.3g}")
        axes.legend(loc="upper right", fontsize="small")
    else:
        _empty(axes, "no numeric pairs")
    space = "log10 units" if comparison.scale is Scale.LOG10 else comparison.units
    axes.set_xlabel(_literal(f"predicted − measured ({space})" if space else "predicted − measured"))
    axes.set_ylabel("pairs")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(_title(comparison, f"residuals, n={errors.size}"), fontsize="medium")
    return _png(figure)


def _reference_lines(axes: Axes, low: float, high: float, scale: Scale) -> None:
    """The identity line and the two bounds of the within rule, over the data's span."""
    if low == high:  # one point: give the line some length
        low, high = (low / 2, high * 2) if scale is Scale.LOG10 else (low - 1, high + 1)
    x = np.geomspace(low, high, 50) if scale is Scale.LOG10 else np.linspace(low, high, 50)
    axes.plot(x, x, color="black", linewidth=1, label="identity", zorder=2)
    # The same limits on both axes, so the identity line is the diagonal.
    margin = 0.05 * (high - low)
    limits = (low / 1.5, high * 1.5) if scale is Scale.LOG10 else (low - margin, high + margin)
    axes.set_xlim(*limits)
    axes.set_ylim(*limits)
    if scale is Scale.LOG10:
        factor = 10**WITHIN_LOG_UNITS
        bounds = (x * factor, x / factor)
    elif scale is Scale.LOG_UNITS:
        bounds = (x + WITHIN_LOG_UNITS, x - WITHIN_LOG_UNITS)
    else:
        bounds = (x * WITHIN_FOLD, x / WITHIN_FOLD)
    for bound in bounds:
        axes.plot(x, bound, color="black", linewidth=0.7, linestyle="--", alpha=0.5, zorder=2)


def check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise ValidationError(
                f"{name} must be {MIN_SIDE}..{MAX_SIDE} pixels", field_violations=[(name, f"{MIN_SIDE}..{MAX_SIDE}")]
            )


def _figure(width: int, height: int) -> tuple[Figure, Axes]:
    check_size(width, height)
    figure = Figure(figsize=(width / PLOT_DPI, height / PLOT_DPI), dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PLOT_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _empty(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="gray")


def _named(comparison: Comparison) -> str:
    return f"{comparison.property} ({comparison.units})" if comparison.units else comparison.property


def _title(comparison: Comparison, tail: str) -> str:
    head = f"{comparison.property} — {comparison.model_name} {comparison.model_version}"
    if len(head) > MAX_TITLE_LENGTH:
        head = head[: MAX_TITLE_LENGTH - 1] + "…"
    return _literal(f"{head}: {tail}")


def _literal(text: str) -> str:
    """Matplotlib reads text between two "$" as math; names must print as typed."""
    return text.replace("$", r"\$")
