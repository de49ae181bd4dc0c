"""A job's predicted values as a CSV download: the header, rows in chunks, cells a spreadsheet will
not run as formulas. Pure Python: the service reads the rows, the servicer streams the text."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from services.prediction.domain.jobs import Prediction
from services.runtime.spreadsheet import neutralise_cell

CONTENT_TYPE = "text/csv; charset=utf-8"
HEADER = ("molecule_id", "property", "value", "units", "confidence", "model_name", "model_version")
ROWS_PER_CHUNK = 1000  # ~100 KB of CSV per streamed message, well under gRPC's 4 MiB


def filename(job_id: str) -> str:
    return f"prediction-{job_id}-results.csv"


def header() -> str:
    return _csv([HEADER])


def rows(predictions: Iterable[Prediction]) -> str:
    """CSV lines for the predictions. Engine-supplied text (property, units, model) is neutralised;
    numbers are written in full precision (repr) and are never formulas."""
    return _csv(
        (
            p.molecule_id,
            neutralise_cell(p.property),
            repr(p.value),
            neutralise_cell(p.units),
            repr(p.confidence),
            neutralise_cell(p.model_name),
            neutralise_cell(p.model_version),
        )
        for p in predictions
    )


def _csv(lines: Iterable[Iterable[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(lines)
    return out.getvalue()
