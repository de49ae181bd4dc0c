"""The results worker's use case: one ResultProcessingRequested item → a validated version.

PENDING → PROCESSING (committed), then the file is read chunk by chunk with the shared CSV machinery,
each chunk's rows validated against the submission (`read_rows`) and the progress (`processed_rows`)
committed per chunk; at the end, in one transaction: the version's values, replicates and row errors,
COMPLETED (QC flag PASSED when clean, WARNING otherwise) or FAILED (the file cannot be read, its mapping no
longer fits, or reject_all met a row error: no value kept), the version made current (superseding the
previous one) and, on the submission's first results, IN_PROGRESS → RESULTS_UPLOADED through the domain.

Idempotent on the result id and its status: a final version is left as it is; a delivery that finds it
PROCESSING (a worker that died mid-file) starts the file again — nothing of an unfinished delivery is kept
but the progress counter, which restarts too — and the final transaction deletes whatever an earlier
delivery might have written before it writes. The row lock on the version makes two deliveries at once
finish one after the other; the second finds it final.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.cro_pb2 import ResultProcessingRequested

from services.cro.domain import results as rules
from services.cro.domain.result_versions import (
    UPLOAD_STATES,
    Mode,
    ResultStatus,
    ResultVersion,
    qc_flag_of,
    uploader,
)
from services.cro.domain.submissions import Submission
from services.cro.service.packages import Recorder
from services.cro.service.results import CSV_LIMITS, ResultService, facts_of, file_object_key
from services.cro.store.uow import CroTransactions
from services.runtime import csv_format
from services.runtime.audit import audit_event
from services.runtime.errors import ValidationError
from services.runtime.storage import ObjectStorage

log = logging.getLogger("molbridge.cro.results")

ROWS_PER_CHUNK = 2000


class ResultProcessor:
    def __init__(
        self, uow: CroTransactions, storage: ObjectStorage, record: Recorder, *, rows_per_chunk: int = ROWS_PER_CHUNK
    ) -> None:
        self._uow = uow
        self._storage = storage
        self._record = record
        self._rows_per_chunk = rows_per_chunk

    async def process(self, item: ResultProcessingRequested) -> bool:
        """False when the item names no version (poison); True when it is (or already was) final."""
        started = await self._start(item.result_id)
        if started is None:
            return False
        version, submission, samples = started
        if version.final:
            return True
        facts = facts_of(submission, samples)
        object_key = file_object_key(version.cro_organization_id, version.storage_key)
        try:
            headers, dialect = await asyncio.to_thread(self._header, object_key)
            plan = rules.plan_columns(headers, version.mapping, column_units=version.column_units)
            chunks = await asyncio.to_thread(self._chunks, object_key, dialect)
        except ValidationError as problem:
            await self._finish(version.id, failure=f"the file cannot be processed: {problem.message}")
            return True
        await self._progress(version.id, 0, total=sum(c.row_count for c in chunks))
        parts: list[rules.RowsRead] = []
        cells: dict[int, list[str]] = {}  # the original cells of rows with an error, for the report
        processed = 0
        for chunk in chunks:
            try:
                part, chunk_cells = await asyncio.to_thread(self._read, object_key, chunk, dialect, plan, facts)
            except ValidationError as problem:
                await self._finish(version.id, failure=f"the file cannot be processed: {problem.message}")
                return True
            parts.append(part)
            cells.update(chunk_cells)
            processed += chunk.row_count
            await self._progress(version.id, processed)
        outcome = rules.build_result_set(plan, parts, facts)
        await self._finish(version.id, outcome=outcome, cells=cells)
        return True

    # -- reading the file ------------------------------------------------------------------------------

    def _header(self, object_key: str) -> tuple[list[str], csv_format.Dialect]:
        with self._storage.open_reader(object_key) as stream:
            found = csv_format.preview(stream, 1, limits=CSV_LIMITS)
        return found.headers, found.dialect

    def _chunks(self, object_key: str, dialect: csv_format.Dialect) -> list[csv_format.Chunk]:
        with self._storage.open_reader(object_key) as stream:
            return csv_format.plan_chunks(stream, dialect, self._rows_per_chunk, limits=CSV_LIMITS)

    def _read(
        self,
        object_key: str,
        chunk: csv_format.Chunk,
        dialect: csv_format.Dialect,
        plan: rules.ColumnPlan,
        facts: rules.SubmissionFacts,
    ) -> tuple[rules.RowsRead, dict[int, list[str]]]:
        rows: list[tuple[int, Sequence[str]]] = []
        unreadable: list[rules.RowError] = []
        cells: dict[int, list[str]] = {}
        with self._storage.read_range(object_key, chunk.byte_start, chunk.byte_end) as stream:
            for row in csv_format.read_chunk(stream, chunk, dialect, columns=len(plan.headers), limits=CSV_LIMITS):
                if isinstance(row, csv_format.RejectedRow):
                    unreadable.append(rules.RowError(row.row_number, "", rules.RowErrorCode.ROW_SHAPE, row.reason))
                    cells[row.row_number] = row.cells
                else:
                    rows.append((row.row_number, row.cells))
        read = rules.read_rows(plan, rows, facts)
        by_number = dict(rows)
        for error in read.errors:
            cells.setdefault(error.row_number, list(by_number.get(error.row_number, ())))
        return rules.RowsRead(read.rows + len(unreadable), read.measurements, read.errors + tuple(unreadable)), cells

    # -- transactions ----------------------------------------------------------------------------------

    async def _start(self, result_id: str) -> tuple[ResultVersion, Submission, list[rules.Sample]] | None:
        async with self._uow() as uow:
            version = await uow.results.get(result_id, lock=True)
            if version is None:
                return None
            submission = await uow.submissions.get(version.submission_id)
            assert submission is not None  # results cascade with their submission
            samples = await ResultService.samples(uow, submission)
            if version.status is ResultStatus.PENDING:
                version.status = ResultStatus.PROCESSING
            if not version.final:
                version.processed_rows = 0
                await uow.results.save(version)
            return version, submission, samples

    async def _progress(self, result_id: str, processed: int, *, total: int | None = None) -> None:
        async with self._uow() as uow:
            await uow.results.set_progress(result_id, processed, total=total)

    async def _finish(
        self,
        result_id: str,
        *,
        failure: str = "",
        outcome: rules.ResultSet | None = None,
        cells: dict[int, list[str]] | None = None,
    ) -> None:
        at = datetime.now(UTC)
        async with self._uow() as uow:
            version = await uow.results.get(result_id, lock=True)
            if version is None or version.final:
                return  # another delivery finished it meanwhile
            submission = await uow.submissions.get(version.submission_id, lock=True)
            assert submission is not None
            await uow.results.clear_outcome(version.id)
            if outcome is not None:
                version.content_sha256 = outcome.sha256
                version.processed_rows = version.total_rows
                version.values_accepted = len(outcome.measurements)
                version.rows_rejected = outcome.qc.rows_rejected
                version.error_count = outcome.qc.errors
                version.qc = qc_json(outcome.qc)
                errors = [(e, (cells or {}).get(e.row_number, [])) for e in outcome.errors]
                if version.mode is Mode.REJECT_ALL and outcome.errors:
                    failure = f"reject_all: {len(outcome.errors)} row errors (see the error report); no value kept"
                    version.values_accepted = 0
                    await uow.results.add_outcome(version.id, (), (), errors)
                elif submission.status not in UPLOAD_STATES:
                    failure = f"the submission is {submission.status}: it no longer takes results"
                else:
                    await uow.results.add_outcome(version.id, outcome.aggregates, outcome.measurements, errors)
            version.finished_at, version.updated_at = at, at
            if failure:
                version.status, version.failure_reason = ResultStatus.FAILED, failure
                await uow.results.save(version)
                uow.record(self._audit("result.failed", version, {"reason": failure}),
                           organization_id=version.cro_organization_id, actor_id=version.uploaded_by)
                return
            assert outcome is not None
            version.status = ResultStatus.COMPLETED
            version.qc_flag = qc_flag_of(outcome.qc.clean).value
            superseded = await uow.results.make_current(version)
            actor = uploader(version)
            events = submission.upload_results(actor, at=at)  # IN_PROGRESS → RESULTS_UPLOADED (first results)
            await uow.submissions.save(submission)
            await self._record(uow, submission, events, actor)
            details = {"superseded": superseded.id if superseded else "", "qc_flag": version.qc_flag}
            uow.record(self._audit("result.completed", version, details),
                       organization_id=version.cro_organization_id, actor_id=version.uploaded_by)

    @staticmethod
    def _audit(action: str, version: ResultVersion, details: dict[str, str]) -> AuditRecorded:
        return audit_event(
            action, target_type="result", target_id=version.id,
            details={"submission_id": version.submission_id, "version": str(version.version),
                     **{k: v for k, v in details.items() if v}},
        )


def qc_json(qc: rules.QcSummary) -> dict[str, object]:
    """The QC summary as stored (results.qc) and read back into the proto."""
    return {
        "rows": qc.rows,
        "rows_rejected": qc.rows_rejected,
        "values_accepted": qc.values_accepted,
        "errors": qc.errors,
        "per_property": {
            name: {"accepted": p.accepted, "rejected": p.rejected, "samples": p.samples}
            for name, p in qc.per_property.items()
        },
        "missing": [[code, name] for code, name in qc.missing],
        "conflicting": qc.conflicting,
        "clean": qc.clean,
    }
