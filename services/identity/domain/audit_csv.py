"""The audit trail as a CSV download: the header, rows in chunks, every cell neutralised so a
spreadsheet never runs one as a formula (actions, ids and details come from callers). Pure Python:
the service reads the entries, the servicer streams the text."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable

from services.identity.domain.audit import AuditEntry
from services.runtime.spreadsheet import neutralise_cell

CONTENT_TYPE = "text/csv; charset=utf-8"
FILENAME = "audit-events.csv"
HEADER = (
    "sequence", "occurred_at", "organization_id", "source", "action", "outcome", "actor_id", "target_type",
    "target_id", "client_address", "request_id", "trace_id", "details", "hash",
)
ROWS_PER_CHUNK = 500


def header() -> str:
    return _csv([HEADER])


def rows(entries: Iterable[AuditEntry]) -> str:
    return _csv(
        [
            str(e.sequence), e.occurred_at.isoformat(), e.organization_id, e.source, e.action, e.outcome,
            e.actor_id, e.target_type, e.target_id, e.client_address, e.request_id, e.trace_id,
            json.dumps(e.details, sort_keys=True, ensure_ascii=False) if e.details else "", e.hash.hex(),
        ]
        for e in entries
    )


def _csv(lines: Iterable[Iterable[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows([neutralise_cell(cell) for cell in line] for line in lines)
    return out.getvalue()
