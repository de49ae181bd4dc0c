"""CSV ingestion, second half: import jobs (service layer, no protos). Uploading and previewing: imports.py.

StartImport reads the file's header, checks the mapping, cuts the file into chunks and, in one
transaction, creates the job and one ImportChunkRequested per chunk in the outbox (subject
`work_subject(queue)` on the WORK stream): the relay publishes them, CSV workers (worker.py) on
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
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePath
from typing import Any

import sqlalchemy as sa
from molbridge.events.v1.molecule_pb2 import ImportChunkRequested, ImportFinished
from sqlalchemy.ext.asyncio import AsyncSession

from bus.outbox import add_event
from bus.subjects import work_subject
from services.molecule.domain import csv_format
from services.molecule.domain.imports import (
    ACTIVE_STATUSES,
    ImportJob,
    JobStatus,
    Mode,
    chunk_phase,
    parse_mode,
    throughput,
)
from services.molecule.domain.library_rules import Action
from services.molecule.domain.properties import KNOWN_PROPERTIES, PREDICTABLE_PROPERTIES
from services.molecule.domain.vocabulary import EVENT_SOURCE, IMPORT_MANAGER_ROLES, WRITER_ROLES
from services.molecule.service.uploads import ImportLimits, StoredUpload, UploadService
from services.molecule.store.libraries import library_for
from services.molecule.store.tables import SCHEMA, import_chunks, import_jobs, import_rejections
from services.runtime.auth import Principal
from services.runtime.db import UnitOfWork, canonical_uuid
from services.runtime.errors import AuthorizationError, NotFoundError, PreconditionError, ValidationError
from services.runtime.idempotency import idempotent
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
        uow: UnitOfWork,
        storage: ObjectStorage,
        uploads: UploadService,
        *,
        public_url: str,
        limits: ImportLimits | None = None,
        queue: str = CSV_QUEUE,
        rows_per_chunk: int = ROWS_PER_CHUNK,
    ) -> None:
        self._uow = uow
        self._storage = storage
        self._uploads = uploads
        self._public_url = public_url.rstrip("/")
        self._limits = limits or ImportLimits()
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
    ) -> ImportJob:
        principal.require_any_role(*WRITER_ROLES)
        chosen_mode = parse_mode(mode)
        wanted = _predictable(predict)
        upload = await self._uploads.get_upload(principal, storage_key)
        headers, dialect = await asyncio.to_thread(self._header, upload)
        csv_format.validate_mapping(headers, mapping, KNOWN_PROPERTIES.keys())
        chunks = await asyncio.to_thread(self._plan, upload, dialect)
        async with self._uow() as session:
            library = None
            if library_id:
                library = (await library_for(session, principal, library_id, Action.CHANGE_MOLECULES)).id

            async def create() -> str:
                job_id = str(uuid.uuid4())
                await session.execute(
                    import_jobs.insert().values(
                        id=job_id,
                        organization_id=principal.organization_id,
                        storage_key=upload.storage_key,
                        filename=upload.filename,
                        mapping=dict(mapping),
                        dialect=asdict(dialect),
                        headers=headers,
                        mode=chosen_mode.value,
                        library_id=library,
                        predict=wanted,
                        status=JobStatus.QUEUED.value,
                        total_rows=sum(chunk.row_count for chunk in chunks),
                        chunk_count=len(chunks),
                        created_by=principal.subject,
                    )
                )
                phase = chunk_phase(chosen_mode)
                for chunk in chunks:
                    await add_event(
                        session,
                        source=EVENT_SOURCE,
                        payload=ImportChunkRequested(
                            job_id=job_id,
                            chunk_index=chunk.index,
                            byte_start=chunk.byte_start,
                            byte_end=chunk.byte_end,
                            first_row_number=chunk.first_row_number,
                            row_count=chunk.row_count,
                            phase=phase.value,
                        ),
                        organization_id=principal.organization_id,
                        actor_id=principal.subject,
                        schema=SCHEMA,
                        subject=self.subject,
                        notify=chunk is chunks[-1],  # one wake-up for the relay is enough
                    )
                return job_id

            job_id = await idempotent(
                session, f"import:{principal.organization_id}:{principal.subject}", request_id, create
            )
            job = await load_job(session, job_id)
        assert job is not None
        return job

    def _header(self, upload: StoredUpload) -> tuple[list[str], csv_format.Dialect]:
        with self._storage.open_reader(upload.object_key) as stream:
            preview = csv_format.preview(
                stream, 1, known_targets=KNOWN_PROPERTIES.keys(), limits=self._limits.csv
            )
        return preview.headers, preview.dialect

    def _plan(self, upload: StoredUpload, dialect: csv_format.Dialect) -> list[csv_format.Chunk]:
        with self._storage.open_reader(upload.object_key) as stream:
            return csv_format.plan_chunks(stream, dialect, self._rows_per_chunk, limits=self._limits.csv)

    async def get_import(self, principal: Principal, job_id: str) -> ImportJob:
        async with self._uow() as session:
            return await _visible_job(session, principal, job_id)

    async def list_imports(self, principal: Principal, page: PageRequest) -> tuple[list[ImportJob], int]:
        """The organization's jobs, newest first."""
        mine = import_jobs.c.organization_id == principal.organization_id
        async with self._uow() as session:
            total = await session.scalar(sa.select(sa.func.count()).select_from(import_jobs).where(mine))
            rows = await session.execute(
                sa.select(import_jobs)
                .where(mine)
                .order_by(import_jobs.c.created_at.desc(), import_jobs.c.id)
                .offset(page.offset)
                .limit(page.page_size)
            )
            now = datetime.now(UTC)
            return [job_from_row(row, now) for row in rows], int(total or 0)

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
        async with self._uow() as session:
            job = await _visible_job(session, principal, job_id, lock=True)
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
            await end_job(session, job, JobStatus.CANCELLED, actor_id=principal.subject)
            ended = await load_job(session, job.id)
        assert ended is not None
        return ended

    async def error_report(self, principal: Principal, job_id: str) -> ErrorReport:
        """The rejected rows as CSV (row, the original cells under the file's headers, reason)."""
        async with self._uow() as session:
            job = await _visible_job(session, principal, job_id)
            return await _report(session, job)

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


# --- shared with the CSV worker ---------------------------------------------------------------------------


def job_from_row(row: Any, now: datetime) -> ImportJob:
    status = JobStatus(row.status)
    return ImportJob(
        id=str(row.id),
        organization_id=str(row.organization_id),
        status=status,
        mode=Mode(row.mode),
        storage_key=row.storage_key,
        filename=row.filename,
        headers=tuple(row.headers),
        mapping=dict(row.mapping),
        dialect=csv_format.Dialect(**row.dialect),
        library_id=str(row.library_id) if row.library_id else None,
        predict=tuple(row.predict),
        total_rows=row.total_rows,
        chunk_count=row.chunk_count,
        chunks_done=row.chunks_done,
        processed_rows=row.processed_rows,
        registered=row.registered,
        merged=row.merged,
        rejected=row.rejected,
        failure_reason=row.failure_reason,
        created_by=row.created_by,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        throughput=throughput(
            row.processed_rows,
            row.total_rows,
            row.started_at,
            row.finished_at if status.terminal and row.finished_at else now,
            ended=status.terminal,
        ),
    )


async def load_job(session: AsyncSession, job_id: str, *, lock: bool = False) -> ImportJob | None:
    query = sa.select(import_jobs).where(import_jobs.c.id == job_id)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).one_or_none()
    return None if row is None else job_from_row(row, datetime.now(UTC))


async def end_job(
    session: AsyncSession, job: ImportJob, status: JobStatus, *, reason: str = "", actor_id: str = ""
) -> bool:
    """Move an active job to an end state and record ImportFinished; False if it had ended already."""
    ended = await session.scalar(
        import_jobs.update()
        .where(import_jobs.c.id == job.id, import_jobs.c.status.in_([s.value for s in ACTIVE_STATUSES]))
        .values(
            status=status.value, failure_reason=reason, finished_at=sa.func.now(), updated_at=sa.func.now()
        )
        .returning(import_jobs.c.id)
    )
    if ended is None:
        return False
    current = await session.execute(
        sa.select(import_jobs.c.registered, import_jobs.c.merged, import_jobs.c.rejected).where(
            import_jobs.c.id == job.id
        )
    )
    registered, merged, rejected = current.one()
    # Validated results waiting for a commit that will never come (reject_all).
    await session.execute(
        import_chunks.update()
        .where(import_chunks.c.job_id == job.id, import_chunks.c.results.is_not(None))
        .values(results=None)
    )
    await add_event(
        session,
        source=EVENT_SOURCE,
        payload=ImportFinished(
            job_id=job.id,
            status=status.value.lower(),
            registered=registered,
            merged=merged,
            rejected=rejected,
        ),
        organization_id=job.organization_id,
        actor_id=actor_id or job.created_by,
        schema=SCHEMA,
    )
    return True


def report_filename(filename: str) -> str:
    return f"{PurePath(filename).stem or 'import'}-errors.csv"


async def _visible_job(
    session: AsyncSession, principal: Principal, job_id: str, *, lock: bool = False
) -> ImportJob:
    canonical = canonical_uuid(job_id)
    job = None if canonical is None else await load_job(session, canonical, lock=lock)
    if job is None or job.organization_id != principal.organization_id:
        raise NotFoundError("Import not found", detail="IMPORT_NOT_FOUND")
    return job


async def _report(session: AsyncSession, job: ImportJob) -> ErrorReport:
    rows = await session.execute(
        sa.select(import_rejections.c.row_number, import_rejections.c.cells, import_rejections.c.reason)
        .where(import_rejections.c.job_id == job.id)
        .order_by(import_rejections.c.row_number)
    )
    out = io.StringIO(newline="")
    count = csv_format.write_error_report(
        (csv_format.RejectedRow(row.row_number, list(row.cells), row.reason) for row in rows),
        out,
        job.headers,
    )
    # With a BOM, spreadsheets read the UTF-8 (the original may have been Latin-1: cells are text now).
    return ErrorReport(report_filename(job.filename), out.getvalue().encode("utf-8-sig"), count)


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


__all__ = [
    "CSV_QUEUE",
    "DownloadLink",
    "ErrorReport",
    "ImportJobService",
    "end_job",
    "job_from_row",
    "load_job",
]
