"""Result use cases (issue 12): the CRO uploads, previews and processes a results CSV for a submission, reads
and corrects its versions; the pharma side reviews them. The validation itself runs in the worker
(service/result_processing.py) on the ResultProcessingRequested item ProcessResults queues.

Decisions:
- Files are the uploading CRO organization's: another organization's storage key answers 404.
- A version is seen by its two parties (and system admins); anyone else meets 404. The CRO side never sees
  the pharma side's molecule ids or registration numbers (blinded views: empty fields).
- ProcessResults on the same file, mapping, units and mode as the submission's latest live version (the
  current one, or one still being processed) answers that version and creates nothing (`created` False).
- Accepting publishes ResultsAccepted (the aggregates with a qualifier: conflicting ones have no value)
  with the submission's REVIEW_RESULTS step, in one transaction; rejecting keeps the submission
  RESULTS_UPLOADED so the CRO uploads a corrected version.
- WatchResult polls the version row like WatchImport: a snapshot on change, at least every 5 s, the last final.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from molbridge.events.v1 import cro_pb2

from services.cro.domain import results as rules
from services.cro.domain.result_versions import (
    IN_WORK,
    Decision,
    QcFlag,
    ResultStatus,
    ResultVersion,
    check_upload,
    input_sha256,
    not_found,
    parse_mode,
)
from services.cro.domain.submissions import Submission
from services.cro.domain.vocabulary import CRO_TECHNICIAN, Side
from services.cro.service.packages import Recorder
from services.cro.store.results import (
    MoleculeValue,
    ResultFilter,
    StoredResultsFile,
    StoredValue,
)
from services.cro.store.uow import CroTransactions, CroUnitOfWork
from services.runtime import csv_format
from services.runtime.audit import audit_event
from services.runtime.auth import Principal
from services.runtime.csv_uploads import stored_csv
from services.runtime.errors import NotFoundError, ValidationError
from services.runtime.pagination import PageRequest
from services.runtime.spreadsheet import neutralise_cell
from services.runtime.storage import MIB, ObjectStorage

RESULT_QUEUE = "result_processing"  # the WORK stream queue the results worker consumes
MAX_UPLOAD_BYTES = 100 * MIB
DEFAULT_FILENAME = "results.csv"
PREVIEW_ROWS, MAX_PREVIEW_ROWS = 20, 100
WATCH_INTERVAL_S = 0.25
WATCH_HEARTBEAT_S = 5.0
REPORT_CONTENT_TYPE = "text/csv; charset=utf-8"
CSV_LIMITS = csv_format.CsvLimits()


def file_object_key(organization_id: str, storage_key: str) -> str:
    return f"results/{organization_id}/{storage_key}.csv"


@dataclass(frozen=True)
class ResultsPreview:
    headers: list[str]
    rows: list[list[str]]
    suggested_mapping: dict[str, str]
    encoding: str
    delimiter: str
    format: str
    measurements: tuple[rules.Measurement, ...] = ()
    errors: tuple[rules.RowError, ...] = ()
    requested_properties: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProcessInput:
    storage_key: str
    submission_id: str
    mapping: Mapping[str, str] = field(default_factory=dict)
    column_units: Mapping[str, str] = field(default_factory=dict)
    mode: str = ""
    notes: str = ""


@dataclass(frozen=True)
class ValueView:
    """A value as the caller may see it (molecule id and registration number empty for the CRO)."""

    aggregate: rules.Aggregate
    registration_number: str
    replicates: tuple[rules.Measurement, ...]


@dataclass(frozen=True)
class MoleculeResultView:
    version: ResultVersion
    value: ValueView


@dataclass(frozen=True)
class ErrorReport:
    filename: str
    data: bytes
    rows: int


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def facts_of(submission: Submission, samples: Sequence[rules.Sample]) -> rules.SubmissionFacts:
    return rules.SubmissionFacts(tuple(samples), rules.requested_properties(submission.specifications))


def blinded_measurement(m: rules.Measurement) -> rules.Measurement:
    return replace(m, molecule_id="")


class ResultService:
    def __init__(self, uow: CroTransactions, storage: ObjectStorage, record: Recorder) -> None:
        self._uow = uow
        self._storage = storage
        self._record = record

    # -- upload and preview ---------------------------------------------------------------------------

    async def upload(
        self, principal: Principal, content_type: str, chunks: AsyncIterator[bytes], *, disposition: str = ""
    ) -> StoredResultsFile:
        """Streams a results CSV to object storage under the caller's (CRO) organization."""
        principal.require_any_role(CRO_TECHNICIAN)
        storage_key = uuid.uuid4().hex
        object_key = file_object_key(principal.organization_id, storage_key)
        async with stored_csv(
            self._storage, object_key, content_type, chunks, max_bytes=MAX_UPLOAD_BYTES,
            default_filename=DEFAULT_FILENAME, disposition=disposition,
        ) as stored:
            stored_file = StoredResultsFile(
                storage_key=storage_key, organization_id=principal.organization_id, filename=stored.filename,
                size_bytes=stored.size_bytes, sha256=stored.sha256, content_type=stored.media_type,
                created_by=principal.subject,
            )
            async with self._uow() as uow:
                await uow.results.add_file(stored_file)
                uow.record(
                    audit_event("result.file_uploaded", target_type="result_file", target_id=storage_key,
                                details={"filename": stored.filename, "sha256": stored.sha256}),
                    actor=principal,
                )
        return stored_file

    async def _file(self, uow: CroUnitOfWork, principal: Principal, storage_key: str) -> StoredResultsFile:
        stored = await uow.results.get_file(storage_key.strip().lower()) if storage_key.strip() else None
        if stored is None or not principal.can_see_organization(stored.organization_id):
            raise NotFoundError("upload not found", detail="UPLOAD_NOT_FOUND")
        return stored

    def _preview(self, stored: StoredResultsFile, rows: int) -> csv_format.Preview:
        with self._storage.open_reader(file_object_key(stored.organization_id, stored.storage_key)) as stream:
            return csv_format.preview(stream, rows, suggest=rules.suggest_mapping, limits=CSV_LIMITS)

    async def preview(
        self,
        principal: Principal,
        storage_key: str,
        *,
        rows: int = 0,
        submission_id: str = "",
        mapping: Mapping[str, str] | None = None,
    ) -> ResultsPreview:
        count = min(rows, MAX_PREVIEW_ROWS) if rows > 0 else PREVIEW_ROWS
        async with self._uow() as uow:
            stored = await self._file(uow, principal, storage_key)
            submission, samples = (
                await self._submission_facts(uow, principal, submission_id) if submission_id else (None, [])
            )
        found = await asyncio.to_thread(self._preview, stored, count)
        chosen = dict(mapping) if mapping else found.suggested_mapping
        view = ResultsPreview(
            headers=found.headers,
            rows=found.rows,
            suggested_mapping=found.suggested_mapping,
            encoding=found.dialect.encoding,
            delimiter=found.dialect.delimiter,
            format=_format_of(found.headers, chosen),
        )
        if submission is None:
            return view
        facts = facts_of(submission, samples)
        plan = rules.plan_columns(found.headers, chosen)
        read = rules.build_result_set(plan, [rules.read_rows(plan, rules.numbered(found.rows), facts)], facts)
        cro_side = submission.side_of(principal) is Side.CRO
        measurements = tuple(sorted(read.measurements, key=lambda m: (m.row_number, m.property)))
        return replace(
            view,
            format=plan.format.value,
            measurements=tuple(blinded_measurement(m) for m in measurements) if cro_side else measurements,
            errors=read.errors,
            requested_properties=tuple(sorted(facts.properties)),
        )

    async def _submission_facts(
        self, uow: CroUnitOfWork, principal: Principal, submission_id: str
    ) -> tuple[Submission, list[rules.Sample]]:
        submission = await self._visible_submission(uow, principal, submission_id)
        return submission, await self.samples(uow, submission)

    @staticmethod
    async def _visible_submission(uow: CroUnitOfWork, principal: Principal, submission_id: str) -> Submission:
        submission = await uow.submissions.get(submission_id)
        if submission is None or not submission.visible_to(principal):
            raise NotFoundError(f"submission {submission_id} not found", detail="SUBMISSION_NOT_FOUND")
        return submission

    @staticmethod
    async def samples(uow: CroUnitOfWork, submission: Submission) -> list[rules.Sample]:
        rows = await uow.submissions.molecules(submission.id)
        return [
            rules.Sample(row.molecule_id, row.sample_code, row.snapshot.registration_number, row.snapshot.inchi_key)
            for row in rows
            if row.sample_code
        ]

    # -- processing ------------------------------------------------------------------------------------

    async def process(self, principal: Principal, request: ProcessInput) -> tuple[ResultVersion, bool]:
        """A new PENDING version and its work item; (version, created). The same input as the submission's
        latest live version answers that version, created False."""
        mode = parse_mode(request.mode)
        notes = request.notes.strip()
        if len(notes) > 4000:
            raise ValidationError("notes: at most 4000 characters", field_violations=[("notes", "at most 4000")])
        async with self._uow() as uow:
            stored = await self._file(uow, principal, request.storage_key)
            submission, _ = await self._submission_facts(uow, principal, request.submission_id)
            check_upload(principal, submission)
        found = await asyncio.to_thread(self._preview, stored, 1)
        mapping = dict(request.mapping) if request.mapping else found.suggested_mapping
        plan = rules.plan_columns(found.headers, mapping, column_units=request.column_units)  # 400 naming problems
        digest = input_sha256(stored.sha256, mapping, request.column_units, mode)
        async with self._uow() as uow:
            locked = await uow.submissions.get(request.submission_id, lock=True)
            if locked is None:
                raise NotFoundError(f"submission {request.submission_id} not found", detail="SUBMISSION_NOT_FOUND")
            check_upload(principal, locked)
            submission = locked
            versions = await uow.results.of_submission(submission.id)
            live = next((v for v in versions if not v.withdrawn and (v.current or v.status in IN_WORK)), None)
            if live is not None and live.input_sha256 == digest:
                return live, False
            version = ResultVersion(
                id=str(uuid.uuid4()),
                submission_id=submission.id,
                organization_id=submission.organization_id,
                cro_organization_id=submission.cro_organization_id,
                version=(versions[0].version + 1) if versions else 1,
                status=ResultStatus.PENDING,
                storage_key=stored.storage_key,
                file_sha256=stored.sha256,
                input_sha256=digest,
                mode=mode,
                uploaded_by=principal.subject,
                filename=stored.filename,
                mapping=mapping,
                column_units=dict(request.column_units),
                format=plan.format.value,
                notes=notes,
            )
            await uow.results.add(version)
            uow.enqueue(RESULT_QUEUE, cro_pb2.ResultProcessingRequested(result_id=version.id), actor=principal)
            uow.record(self._audit("result.processing_requested", version, {"mode": mode.value}), actor=principal)
            created = await uow.results.get(version.id)
        assert created is not None
        return created, True

    # -- reading -----------------------------------------------------------------------------------------

    async def get(self, principal: Principal, result_id: str) -> ResultVersion:
        async with self._uow() as uow:
            return await self._visible(uow, principal, result_id)

    async def list_results(
        self, principal: Principal, page: PageRequest, *, submission_id: str = "", statuses: Sequence[str] = (),
        current_only: bool = False,
    ) -> tuple[list[ResultVersion], int]:
        wanted = tuple(s.strip().upper() for s in statuses if s.strip())
        unknown = [s for s in wanted if s not in ResultStatus.__members__]
        if unknown:
            problem = f"one of {', '.join(ResultStatus)}"
            raise ValidationError(f"status: {problem}", field_violations=[("status", problem)])
        kind = principal.organization_kind
        filters = ResultFilter(
            organization_id=principal.organization_id if kind == Side.PHARMA.value else "",
            cro_organization_id=principal.organization_id if kind == Side.CRO.value else "",
            everyone=principal.is_system_admin,
            submission_id=submission_id,
            statuses=wanted,
            current_only=current_only,
        )
        async with self._uow() as uow:
            if submission_id:  # a submission the caller cannot see answers as one that does not exist
                await self._visible_submission(uow, principal, submission_id)
            return await uow.results.find(filters, page)

    async def values(
        self, principal: Principal, result_id: str, page: PageRequest, *, property_name: str = "",
        sample_code: str = "",
    ) -> tuple[list[ValueView], int]:
        async with self._uow() as uow:
            version = await self._visible(uow, principal, result_id)
            stored, total = await uow.results.values_page(
                version.id, page, property_name=property_name.strip(), sample_code=sample_code
            )
            numbers = await uow.results.registration_numbers(version.submission_id)
        cro_side = version.side_of(principal) is Side.CRO
        return [self._value_view(v, numbers, cro_side=cro_side) for v in stored], total

    @staticmethod
    def _value_view(stored: StoredValue, numbers: Mapping[str, str], *, cro_side: bool) -> ValueView:
        if cro_side:
            return ValueView(
                replace(stored.aggregate, molecule_id=""), "", tuple(blinded_measurement(m) for m in stored.replicates)
            )
        return ValueView(stored.aggregate, numbers.get(stored.aggregate.molecule_id, ""), stored.replicates)

    async def error_report(self, principal: Principal, result_id: str) -> ErrorReport:
        """row, column, code, reason, then the row's original cells under the file's headers (made safe)."""
        async with self._uow() as uow:
            version = await self._visible(uow, principal, result_id)
            errors = await uow.results.errors(version.id)
            stored = await uow.results.get_file(version.storage_key)
        headers: list[str] = []
        if stored is not None:
            try:
                headers = (await asyncio.to_thread(self._preview, stored, 1)).headers
            except ValidationError:
                headers = []  # an unreadable file: its error has no cells either
        out = io.StringIO(newline="")
        writer = csv.writer(out)
        writer.writerow(["row", "column", "code", "reason", *(neutralise_cell(h) for h in headers)])
        for e in errors:
            writer.writerow(
                [e.error.row_number, neutralise_cell(e.error.column), e.error.code, neutralise_cell(e.error.reason),
                 *(neutralise_cell(cell) for cell in e.cells)]
            )
        name = f"{PurePath(version.filename).stem or 'results'}-v{version.version}-errors.csv"
        return ErrorReport(name, out.getvalue().encode("utf-8-sig"), len(errors))

    async def watch(
        self, principal: Principal, result_id: str, *, interval: float = WATCH_INTERVAL_S,
        heartbeat: float = WATCH_HEARTBEAT_S,
    ) -> AsyncIterator[tuple[ResultVersion, bool]]:
        """(version, final) now, on every change of progress and at least every `heartbeat` seconds."""
        sent_key: tuple[object, ...] | None = None
        sent_at = 0.0
        while True:
            version = await self.get(principal, result_id)
            key = (version.status, version.processed_rows, version.total_rows)
            if version.final or key != sent_key or time.monotonic() - sent_at >= heartbeat:
                yield version, version.final
                sent_key, sent_at = key, time.monotonic()
            if version.final:
                return
            await asyncio.sleep(interval)

    async def molecule_results(
        self, principal: Principal, molecule_id: str, page: PageRequest
    ) -> tuple[list[MoleculeResultView], int]:
        """A molecule's measured values across its organization's versions (the pharma side only)."""
        if principal.organization_kind != Side.PHARMA.value and not principal.is_system_admin:
            raise NotFoundError(f"molecule {molecule_id} not found", detail="MOLECULE_NOT_FOUND")
        async with self._uow() as uow:
            found, total = await uow.results.of_molecule(principal.organization_id, molecule_id, page)
            numbers: dict[str, dict[str, str]] = {}
            for item in found:
                if item.version.submission_id not in numbers:
                    numbers[item.version.submission_id] = await uow.results.registration_numbers(
                        item.version.submission_id
                    )
        return [self._molecule_view(item, numbers[item.version.submission_id]) for item in found], total

    def _molecule_view(self, item: MoleculeValue, numbers: Mapping[str, str]) -> MoleculeResultView:
        return MoleculeResultView(item.version, self._value_view(item.value, numbers, cro_side=False))

    # -- changes -----------------------------------------------------------------------------------------

    async def update(
        self, principal: Principal, result_id: str, *, notes: str | None, qc_flag: str, qc_note: str
    ) -> ResultVersion:
        flag = None
        if qc_flag:
            if qc_flag not in QcFlag.__members__:
                problem = f"one of {', '.join(QcFlag)}"
                raise ValidationError(f"qc_flag: {problem}", field_violations=[("qc_flag", problem)])
            flag = QcFlag(qc_flag)
        async with self._uow() as uow:
            version = await self._visible(uow, principal, result_id, lock=True)
            changed = version.update(principal, notes=notes, qc_flag=flag, qc_note=qc_note, at=_now())
            if changed:
                await uow.results.save(version)
                details = {"fields": ",".join(changed), "qc_flag": version.qc_flag if flag else ""}
                uow.record(self._audit("result.updated", version, details), actor=principal)
            return await self._visible(uow, principal, result_id)

    async def withdraw(self, principal: Principal, result_id: str) -> ResultVersion:
        """Withdrawn by the CRO before review; the previous version still standing becomes current again."""
        async with self._uow() as uow:
            version = await self._visible(uow, principal, result_id, lock=True)
            await uow.submissions.get(version.submission_id, lock=True)  # one change of "current" at a time
            was_current = version.current
            if version.withdraw(principal, at=_now()):
                await uow.results.save(version)
                restored = await uow.results.restore_previous(version) if was_current else None
                details = {"restored": restored.id if restored else ""}
                uow.record(self._audit("result.withdrawn", version, details), actor=principal)
            return await self._visible(uow, principal, result_id)

    async def review(self, principal: Principal, result_id: str, *, decision: str, reason: str) -> ResultVersion:
        if decision not in (Decision.ACCEPTED.value, Decision.REJECTED.value):
            problem = "ACCEPTED or REJECTED"
            raise ValidationError(f"decision: {problem}", field_violations=[("decision", problem)])
        chosen = Decision(decision)
        at = _now()
        async with self._uow() as uow:
            version = await self._visible(uow, principal, result_id, lock=True)
            submission = await uow.submissions.get(version.submission_id, lock=True)
            assert submission is not None
            version.review(principal, decision=chosen, reason=reason, at=at)
            if chosen is Decision.ACCEPTED:
                events = submission.review_results(principal, at=at)  # RESULTS_UPLOADED → RESULTS_REVIEWED
                await uow.submissions.save(submission)
                await self._record(uow, submission, events, principal)
                aggregates = await uow.results.aggregates(version.id)
                uow.record(self._accepted(version, aggregates, principal, at), actor=principal)
            await uow.results.save(version)
            uow.record(
                self._audit(f"result.{chosen.value.lower()}", version, {"reason": version.review_reason}),
                actor=principal,
            )
            return await self._visible(uow, principal, result_id)

    @staticmethod
    def _accepted(
        version: ResultVersion, aggregates: Sequence[rules.Aggregate], principal: Principal, at: datetime
    ) -> cro_pb2.ResultsAccepted:
        return cro_pb2.ResultsAccepted(
            submission_id=version.submission_id,
            organization_id=version.organization_id,
            result_id=version.id,
            result_version=version.version,
            accepted_by=principal.subject,
            accepted_at=_timestamp(at),
            values=[
                cro_pb2.ExperimentalValue(
                    molecule_id=a.molecule_id,
                    property=a.property,
                    value=a.value,
                    qualifier=a.qualifier.value,
                    units=a.units,
                    n=a.n + a.n_censored,
                    sd=a.sd or 0.0,
                    sample_code=a.sample_code,
                )
                for a in aggregates
                if a.qualifier is not None and a.value is not None
            ],
        )

    # -- helpers -----------------------------------------------------------------------------------------

    @staticmethod
    async def _visible(
        uow: CroUnitOfWork, principal: Principal, result_id: str, *, lock: bool = False
    ) -> ResultVersion:
        version = await uow.results.get(result_id, lock=lock)
        if version is None or not version.visible_to(principal):
            raise not_found(result_id)
        return version

    @staticmethod
    def _audit(action: str, version: ResultVersion, details: Mapping[str, str] | None = None) -> Any:
        return audit_event(
            action,
            target_type="result",
            target_id=version.id,
            details={
                "submission_id": version.submission_id,
                "version": str(version.version),
                **{k: v for k, v in (details or {}).items() if v},
            },
        )


def _format_of(headers: Sequence[str], mapping: Mapping[str, str]) -> str:
    try:
        return rules.plan_columns(headers, mapping).format.value
    except rules.MappingError:
        return ""
