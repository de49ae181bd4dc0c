"""CSV ingestion, second half: import jobs (use cases, no protos). Uploading and previewing: uploads.py.

StartImport reads the file's header, checks the mapping, cuts the file into chunks and, in one
transaction, creates the job and one ImportChunkRequested per chunk in the outbox (subject
`work_subject(queue)` on the WORK stream): the relay publishes them, CSV workers (worker/) on
any machine take them, and the job row is where their progress meets. Everything here is scoped to
the caller's organization: another organization's job answers 404, system admins included (as for
libraries: data is seen outside its organization only when shared on purpose).

Decisions:
- Anyone of the organization may read a job, its progress and its error report; starting one needs
  the upload role (vocabulary.WRITER_ROLES); cancelling needs its creator or an organization admin.
- Cancelling an ended job: a cancelled one answers as it is (a retried cancel), a completed or
  failed one is a conflict.
- WatchImport polls the job row (one primary-key read every 250 ms per watcher) rather than
  LISTEN/NOTIFY: no extra connection per watcher and nothing to lose when a connection drops.
  It sends a snapshot when the progress changes, and at least every 5 s so that proxies see traffic;
  the last one has `final` set.
- GetImportErrors answers with the report itself, up to MAX_INLINE_REPORT_BYTES (one gRPC message);
  a larger one is refused with REPORT_TOO_LARGE, pointing at the link.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePath

from molbridge.events.v1.molecule_pb2 import ImportChunkRequested

from bus.subjects import work_subject
from services.molecule.adapters.identity_users import Credentials
from services.molecule.domain import csv_mapping
from services.molecule.domain.audit import import_ended
from services.molecule.domain.imports import ImportJob, JobStatus, chunk_phase, parse_mode
from services.molecule.domain.library_rules import Action
from services.molecule.domain.properties import KNOWN_PROPERTIES, PREDICTABLE_PROPERTIES
from services.molecule.domain.uploads import ImportLimits, StoredUpload
from services.molecule.domain.vocabulary import IMPORT_MANAGER_ROLES, WRITER_ROLES
from services.molecule.service.numbering import Numbering
from services.molecule.service.uploads import UploadService
from services.molecule.store.uow import MoleculeTransactions
from services.runtime import csv_format
from services.runtime.audit import audit_event
from services.runtime.auth import Principal
from services.runtime.errors import AuthorizationError, PreconditionError, ValidationError
from services.runtime.pagination import PageRequest
from services.runtime.storage import ObjectStorage

log = logging.getLogger(__name__)

CSV_QUEUE = "csv_chunks"  # MOLBRIDGE_CSV_QUEUE overrides it (tests give each run its own queue)
ROWS_PER_CHUNK = 5000
WATCH_INTERVAL_S = 0.25
WATCH_HEARTBEAT_S = 5.0
REPORT_LINK_SECONDS = 3600
MAX_INLINE_REPORT_BYTES = 7 << 20  # under the 8 MiB gRPC message limit of services.runtime.server
REPORT_CONTENT_TYPE = "text/csv; charset=utf-8"


@dataclass(frozen=True, slots=True)
class ErrorReport:
    filename: str
    data: bytes
    rows: int


@dataclass(frozen=True, slots=True)
class DownloadLink:
    url: str
    expires_at: datetime | None  # None: the link is an API route, valid while the caller's token is


class ImportJobService:
    def __init__(
        self,
        uow: MoleculeTransactions,
        storage: ObjectStorage,
        uploads: UploadService,
        *,
        public_url: str,
        limits: ImportLimits | None = None,
        queue: str = CSV_QUEUE,
        rows_per_chunk: int = ROWS_PER_CHUNK,
        numbering: Numbering | None = None,
    ) -> None:
        self._uow = uow
        self._numbering = numbering
        self._storage = storage
        self._uploads = uploads
        self._public_url = public_url.rstrip("/")
        self._limits = limits or ImportLimits()
        self._queue = queue
        self.subject = work_subject(queue)
        self._rows_per_chunk = rows_per_chunk

    async def start_import(
        self,
        principal: Principal,
        storage_key: str,
        mapping: Mapping[str, str],
        mode: str,
        library_id: str,
        predict: Sequence[str],
        request_id: str,
        *,
        credentials: Credentials = (),
    ) -> ImportJob:
        """`credentials` are the caller's (the organization's name for its default registration prefix)."""
        principal.require_any_role(*WRITER_ROLES)
        chosen_mode = parse_mode(mode)
        wanted = _predictable(predict)
        upload = await self._uploads.get_upload(principal, storage_key)
        headers, dialect = await asyncio.to_thread(self._header, upload)
        csv_mapping.validate_mapping(headers, mapping, KNOWN_PROPERTIES.keys())
        chunks = await asyncio.to_thread(self._plan, upload, dialect)
        if self._numbering is not None:
            await self._numbering.prepare(principal, credentials)
        # Before the job exists: an imported file is the molecules' source and must not expire (a job
        # that then fails to commit leaves a kept upload, never an import without its file).
        await self._storage.keep(upload.object_key)
        async with self._uow() as uow:
            library = None
            if library_id:
                library = (await uow.libraries.get(principal, library_id, Action.CHANGE_MOLECULES)).id

            async def create() -> str:
                job_id = await uow.import_jobs.add(
                    principal, upload, mapping=mapping, dialect=dialect, headers=headers, mode=chosen_mode,
                    library_id=library, predict=wanted, chunks=chunks,
                )
                phase = chunk_phase(chosen_mode)
                for chunk in chunks:
                    uow.enqueue(
                        self._queue,
                        ImportChunkRequested(
                            job_id=job_id,
                            chunk_index=chunk.index,
                            byte_start=chunk.byte_start,
                            byte_end=chunk.byte_end,
                            first_row_number=chunk.first_row_number,
                            row_count=chunk.row_count,
                            phase=phase.value,
                        ),
                        actor=principal,
                    )
                uow.record(
                    audit_event(
                        "import.started",
                        target_type="import",
                        target_id=job_id,
                        details={
                            "storage_key": upload.storage_key,
                            "filename": upload.filename,
                            "mode": chosen_mode.value,
                            "rows": str(sum(chunk.row_count for chunk in chunks)),
                            "chunks": str(len(chunks)),
                            "library_id": library or "",
                            "predict": ",".join(wanted),
                        },
                    ),
                    actor=principal,
                )
                return job_id

            job_id = await uow.once(f"import:{principal.organization_id}:{principal.subject}", request_id, create)
            job = await uow.import_jobs.get(job_id)
        assert job is not None
        return job

    def _header(self, upload: StoredUpload) -> tuple[list[str], csv_format.Dialect]:
        with self._storage.open_reader(upload.object_key) as stream:
            preview = csv_format.preview(stream, 1, limits=self._limits.csv)
        return preview.headers, preview.dialect

    def _plan(self, upload: StoredUpload, dialect: csv_format.Dialect) -> list[csv_format.Chunk]:
        with self._storage.open_reader(upload.object_key) as stream:
            return csv_format.plan_chunks(stream, dialect, self._rows_per_chunk, limits=self._limits.csv)

    async def get_import(self, principal: Principal, job_id: str) -> ImportJob:
        async with self._uow() as uow:
            return await uow.import_jobs.visible(principal, job_id)

    async def list_imports(self, principal: Principal, page: PageRequest) -> tuple[list[ImportJob], int]:
        """The organization's jobs, newest first."""
        async with self._uow() as uow:
            return await uow.import_jobs.page(principal, page)

    async def watch_import(
        self,
        principal: Principal,
        job_id: str,
        *,
        interval: float = WATCH_INTERVAL_S,
        heartbeat: float = WATCH_HEARTBEAT_S,
    ) -> AsyncIterator[tuple[ImportJob, bool]]:
        """(job, final) now, on every change and at least every `heartbeat` seconds; the last has final=True.

        Ends when the job ends; a client that goes away cancels the await in progress.
        """
        sent_key: tuple[object, ...] | None = None
        sent_at = 0.0
        while True:
            job = await self.get_import(principal, job_id)
            final = job.status.terminal
            if final or job.progress_key != sent_key or time.monotonic() - sent_at >= heartbeat:
                yield job, final
                sent_key, sent_at = job.progress_key, time.monotonic()
            if final:
                return
            await asyncio.sleep(interval)

    async def cancel_import(self, principal: Principal, job_id: str) -> ImportJob:
        """Stop a job: its remaining chunks are skipped; in reject_all mode nothing stays registered."""
        async with self._uow() as uow:
            job = await uow.import_jobs.visible(principal, job_id, lock=True)
            if principal.subject != job.created_by and not principal.has_any_role(*IMPORT_MANAGER_ROLES):
                raise AuthorizationError(
                    "Only the user who started an import, or an organization admin, may cancel it",
                    detail="NOT_JOB_OWNER",
                )
            if job.status is JobStatus.CANCELLED:
                return job
            if job.status.terminal:
                raise PreconditionError(
                    f"The import has already {job.status.value.lower()}", detail="IMPORT_ENDED"
                )
            finished = await uow.import_jobs.end(job, JobStatus.CANCELLED)
            if finished is not None:
                uow.record(finished, organization_id=job.organization_id, actor=principal)
                uow.record(import_ended(finished), organization_id=job.organization_id, actor=principal)
            ended = await uow.import_jobs.get(job.id)
        assert ended is not None
        return ended

    async def error_report(self, principal: Principal, job_id: str) -> ErrorReport:
        """The rejected rows as CSV (row, the original cells under the file's headers, reason)."""
        async with self._uow() as uow:
            job = await uow.import_jobs.visible(principal, job_id)
            rejected = await uow.import_jobs.rejections(job)
        out = io.StringIO(newline="")
        count = csv_format.write_error_report(rejected, out, job.headers)
        # With a BOM, spreadsheets read the UTF-8 (the original may have been Latin-1: cells are text now).
        return ErrorReport(report_filename(job.filename), out.getvalue().encode("utf-8-sig"), count)

    async def error_report_inline(self, principal: Principal, job_id: str) -> ErrorReport:
        """error_report, refused when it is too large for one response."""
        report = await self.error_report(principal, job_id)
        if len(report.data) > MAX_INLINE_REPORT_BYTES:
            raise PreconditionError(
                f"The error report is {len(report.data):,} bytes, too large to send inline;"
                " download it from GET /api/v1/molecules/imports/{job_id}/errors-link",
                detail="REPORT_TOO_LARGE",
            )
        return report

    async def error_report_link(self, principal: Principal, job_id: str) -> DownloadLink:
        """A presigned URL of the report when the storage signs them (S3), else the API route."""
        job = await self.get_import(principal, job_id)
        key = f"reports/{job.id}/errors.csv"
        url = await self._storage.presigned_url(
            key, REPORT_LINK_SECONDS, download_name=report_filename(job.filename)
        )
        if url is None:
            return DownloadLink(f"{self._public_url}/api/v1/molecules/imports/{job.id}/errors", None)
        expires_at = datetime.now(UTC) + timedelta(seconds=REPORT_LINK_SECONDS)
        report = await self.error_report(principal, job_id)
        await self._storage.put_bytes(key, report.data, REPORT_CONTENT_TYPE)
        return DownloadLink(url, expires_at)


# --- helpers ------------------------------------------------------------------------------------------


def report_filename(filename: str) -> str:
    return f"{PurePath(filename).stem or 'import'}-errors.csv"


def _predictable(predict: Sequence[str]) -> list[str]:
    wanted = list(dict.fromkeys(name.strip() for name in predict if name.strip()))
    unknown = [name for name in wanted if name not in PREDICTABLE_PROPERTIES]
    if unknown:
        raise ValidationError(
            f"cannot predict {', '.join(map(repr, unknown))}: predictable properties are "
            + ", ".join(PREDICTABLE_PROPERTIES),
            field_violations=[("predict", f"{name!r} is not predictable") for name in unknown],
        )
    return wanted


__all__ = ["CSV_QUEUE", "DownloadLink", "ErrorReport", "ImportJobService"]
