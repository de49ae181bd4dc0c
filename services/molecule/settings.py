"""The molecule service's own settings, read and checked once at start (a bad value stops the start,
naming the variable and what it accepts). The mesh-wide ones (database, bus, addresses) are
services.runtime.settings.Settings; object storage is configured by services.runtime.storage."""

from __future__ import annotations

import os
from dataclasses import dataclass

from services.molecule.service.import_jobs import CSV_QUEUE
from services.molecule.service.search import Budgets
from services.molecule.service.uploads import DEFAULT_MAX_ROWS, DEFAULT_MAX_UPLOAD_BYTES, ImportLimits
from services.runtime.settings import Settings


@dataclass(frozen=True)
class MoleculeSettings:
    public_url: str  # MOLBRIDGE_PUBLIC_URL: where error-report links point (default: the local gateway)
    csv_queue: str  # MOLBRIDGE_CSV_QUEUE: the work queue of CSV chunks (tests give each run its own)
    csv_processes: int  # MOLBRIDGE_CSV_PROCESSES: chemistry processes per CSV worker (default: the cores)
    import_limits: ImportLimits  # MOLBRIDGE_MAX_UPLOAD_BYTES, MOLBRIDGE_MAX_IMPORT_ROWS
    search_budgets: Budgets  # MOLBRIDGE_SEARCH_SIMILARITY_BUDGET_MS, MOLBRIDGE_SEARCH_SUBSTRUCTURE_BUDGET_MS

    @classmethod
    def from_settings(cls, settings: Settings) -> MoleculeSettings:
        gateway_port = _positive_int(settings, "GATEWAY_PORT", 8080)
        return cls(
            public_url=settings.get("MOLBRIDGE_PUBLIC_URL") or f"http://127.0.0.1:{gateway_port}",
            csv_queue=settings.get("MOLBRIDGE_CSV_QUEUE") or CSV_QUEUE,
            csv_processes=_positive_int(settings, "MOLBRIDGE_CSV_PROCESSES", os.cpu_count() or 1),
            import_limits=ImportLimits(
                max_upload_bytes=_positive_int(settings, "MOLBRIDGE_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES),
                max_rows=_positive_int(settings, "MOLBRIDGE_MAX_IMPORT_ROWS", DEFAULT_MAX_ROWS),
            ),
            search_budgets=Budgets.from_settings(settings),
        )


def _positive_int(settings: Settings, name: str, default: int) -> int:
    raw = settings.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a positive whole number, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive whole number, got {raw!r}")
    return value
