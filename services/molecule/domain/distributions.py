"""Histogram of a property over a set of molecules, and its PNG plot. Pure: numbers in, numbers/bytes out.

Decisions:
- Bins span the data's own min–max (numpy's default); all-equal values get numpy's ±0.5 span.
- No values → no edges, no counts, mean and median 0 (proto doubles have no "absent", and NaN
  would print as the string "NaN" in JSON); `with_value` = 0 says there was nothing to summarise.
- The plot is drawn on a bare Figure with the Agg canvas, never pyplot: pyplot keeps global state
  that is not safe across the threads the service renders in.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PLOT_DPI = 100
MAX_TITLE_LENGTH = 80


@dataclass(frozen=True)
class Histogram:
    property: str
    units: str
    edges: list[float]
    counts: list[int]
    with_value: int
    missing: int
    mean: float
    median: float


def histogram(values: Sequence[float] | np.ndarray, *, bins: int, missing: int, name: str, units: str) -> Histogram:
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return Histogram(name, units, [], [], 0, missing, 0.0, 0.0)
    counts, edges = np.histogram(data, bins=bins)
    return Histogram(
        property=name,
        units=units,
        edges=edges.tolist(),
        counts=counts.astype(int).tolist(),
        with_value=int(data.size),
        missing=missing,
        mean=float(data.mean()),
        median=float(np.median(data)),
    )


def axis_label(name: str, units: str) -> str:
    return _literal(f"{name} ({units})" if units else name)


def _literal(text: str) -> str:
    """Matplotlib reads text between two "$" as math; user text ("$5 $10 set") must print as typed."""
    return text.replace("$", r"\$")


def render_png(hist: Histogram, *, title: str, width: int, height: int) -> bytes:
    """A bar plot of `hist`, width × height pixels."""
    figure = Figure(figsize=(width / PLOT_DPI, height / PLOT_DPI), dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if hist.counts:
        axes.stairs(hist.counts, hist.edges, fill=True, color="#3b7dd8", edgecolor="#1f4e8c")
        axes.axvline(hist.median, color="#d8643b", linestyle="--", linewidth=1, label=f"median {hist.median:.4g}")
        axes.legend(loc="upper right", fontsize="small")
    else:
        axes.text(0.5, 0.5, "no values", ha="center", va="center", transform=axes.transAxes, color="gray")
    axes.set_xlabel(axis_label(hist.property, hist.units))
    axes.set_ylabel("molecules")
    shown = title if len(title) <= MAX_TITLE_LENGTH else title[: MAX_TITLE_LENGTH - 1] + "…"
    axes.set_title(_literal(f"{shown} — {hist.with_value} with a value, {hist.missing} missing"), fontsize="medium")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PLOT_DPI)
    return buffer.getvalue()
