"""EXPERIMENTAL values from accepted CRO results (issue 12): how a measured value is stored and which of
two results of the same property wins. Plain rules, no I/O.

A censored value (`<`, `>`: beyond the assay's range) is never stored as a plain number: it is the text
"<10" with no number, so numeric filters and sorts never take "<10" for 10 (the query index keeps it as a
text value: a numeric range filter leaves the molecule out, a sort puts it after the numbers). It still
wins over IMPORTED/PREDICTED numbers of the same property: a measurement, even censored, is what the
molecule shows. `=` and `~` are numbers; the qualifier stays in the provenance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

CENSORED = ("<", ">")
QUALIFIERS = ("=", "~", *CENSORED)


@dataclass(frozen=True, slots=True)
class StoredCell:
    value_num: float | None
    value_text: str | None


def stored_cell(value: float, qualifier: str) -> StoredCell | None:
    """How a measured value is stored; None for a value that cannot be (unknown qualifier, not finite)."""
    qualifier = qualifier or "="
    if qualifier not in QUALIFIERS or value != value or value in (float("inf"), float("-inf")):
        return None
    if qualifier in CENSORED:
        return StoredCell(None, f"{qualifier}{value:g}")
    return StoredCell(value, None)


def replaces(stored_accepted_at: datetime | None, accepted_at: datetime) -> bool:
    """A result accepted at `accepted_at` replaces the stored EXPERIMENTAL value unless that one is newer
    (an older event delivered late never overwrites); the same time replaces (a redelivery is already
    stopped by the processed-event marker, so this is a new result version accepted at the same instant)."""
    return stored_accepted_at is None or accepted_at >= stored_accepted_at
