"""The molecule service's settings: what every process reads (services.runtime.settings.Settings: database,
bus, addresses, object storage) plus the molecule service's own variables, typed and checked at start —
a bad value stops the process naming the variable and what it accepts."""

from __future__ import annotations

import os

from pydantic import Field

from services.molecule.domain.uploads import DEFAULT_MAX_ROWS, DEFAULT_MAX_UPLOAD_BYTES, ImportLimits
from services.molecule.index.matcher import DEFAULT_WORKERS, DEFAULT_WORKERS_PER_ORG, MatcherLimits
from services.molecule.service.import_jobs import CSV_QUEUE, ROWS_PER_CHUNK
from services.molecule.service.search import Budgets
from services.runtime.settings import Settings


class MoleculeSettings(Settings):
    # The work queue of CSV chunks (tests give each run its own).
    csv_queue: str = Field(CSV_QUEUE, min_length=1, validation_alias="MOLBRIDGE_CSV_QUEUE")
    # Chemistry processes per CSV worker (default: the cores).
    csv_processes: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, validation_alias="MOLBRIDGE_CSV_PROCESSES"
    )
    # Rows per work item of an import: smaller = finer progress and retries, more messages.
    import_chunk_rows: int = Field(ROWS_PER_CHUNK, ge=1, validation_alias="MOLBRIDGE_IMPORT_CHUNK_ROWS")
    max_upload_bytes: int = Field(DEFAULT_MAX_UPLOAD_BYTES, ge=1, validation_alias="MOLBRIDGE_MAX_UPLOAD_BYTES")
    max_import_rows: int = Field(DEFAULT_MAX_ROWS, ge=1, validation_alias="MOLBRIDGE_MAX_IMPORT_ROWS")
    # How long a structure search may run before it stops and says `truncated` (milliseconds).
    similarity_budget_ms: float = Field(
        1000 * Budgets.similarity_s, gt=0, validation_alias="MOLBRIDGE_SEARCH_SIMILARITY_BUDGET_MS"
    )
    substructure_budget_ms: float = Field(
        1000 * Budgets.substructure_s, gt=0, validation_alias="MOLBRIDGE_SEARCH_SUBSTRUCTURE_BUDGET_MS"
    )

    # Substructure matching processes, in all and per organization (a match running at its budget is killed).
    match_workers: int = Field(DEFAULT_WORKERS, ge=1, validation_alias="MOLBRIDGE_SEARCH_MATCH_WORKERS")
    match_workers_per_org: int = Field(
        DEFAULT_WORKERS_PER_ORG, ge=1, validation_alias="MOLBRIDGE_SEARCH_MATCH_WORKERS_PER_ORG"
    )

    @property
    def matcher_limits(self) -> MatcherLimits:
        return MatcherLimits(workers=self.match_workers, per_organization=self.match_workers_per_org)

    @property
    def import_limits(self) -> ImportLimits:
        return ImportLimits(max_upload_bytes=self.max_upload_bytes, max_rows=self.max_import_rows)

    @property
    def search_budgets(self) -> Budgets:
        return Budgets(
            similarity_s=self.similarity_budget_ms / 1000, substructure_s=self.substructure_budget_ms / 1000
        )
