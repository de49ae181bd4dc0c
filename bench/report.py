"""Printing figures: aligned tables, and the issue's targets with a verdict (never an assertion)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One measured figure of a benchmark, with the issue's target for it if there is one."""

    name: str
    value: str
    target: str = ""
    met: bool | None = None  # None: no target, or nothing to judge (not measured)

    @property
    def verdict(self) -> str:
        return "" if self.met is None else ("met" if self.met else "missed")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """First column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    return [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [headers, *rows]
    ]


def figures_table(figures: Sequence[Figure]) -> list[str]:
    return table(["figure", "value", "target", "verdict"], [[f.name, f.value, f.target, f.verdict] for f in figures])
