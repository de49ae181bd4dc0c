"""Import jobs in PostgreSQL: the job row (where the chunks' progress meets), its rejected rows."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from molbridge.events.v1.molecule_pb2 import ImportFinished
from sqlalchemy.ext.asyncio import AsyncSession

from services.molecule.domain.imports import ACTIVE_STATUSES, ImportJob, JobStatus, Mode, throughput
from services.molecule.domain.uploads import StoredUpload
from services.molecule.store.tables import import_chunks, import_jobs, import_rejections
from services.runtime import csv_format
from services.runtime.auth import Principal
from services.runtime.db import canonical_uuid
from services.runtime.errors import NotFoundError
from services.runtime.pagination import PageRequest


class ImportJobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(
        self,
        principal: Principal,
        upload: StoredUpload,
        *,
        mapping: Mapping[str, str],
        dialect: csv_format.Dialect,
        headers: list[str],
        mode: Mode,
        library_id: str | None,
        predict: list[str],
        chunks: Sequence[csv_format.Chunk],
    ) -> str:
        job_id = str(uuid.uuid4())
        await self._session.execute(
            import_jobs.insert().values(
                id=job_id,
                organization_id=principal.organization_id,
                storage_key=upload.storage_key,
                filename=upload.filename,
                mapping=dict(mapping),
                dialect=asdict(dialect),
                headers=headers,
                mode=mode.value,
                library_id=library_id,
                predict=predict,
                status=JobStatus.QUEUED.value,
                total_rows=sum(chunk.row_count for chunk in chunks),
                chunk_count=len(chunks),
                created_by=principal.subject,
            )
        )
        return job_id

    async def get(self, job_id: str, *, lock: bool = False) -> ImportJob | None:
        return await load_job(self._session, job_id, lock=lock)

    async def visible(self, principal: Principal, job_id: str, *, lock: bool = False) -> ImportJob:
        """The caller's organization's job; any other id answers 404."""
        canonical = canonical_uuid(job_id)
        job = None if canonical is None else await load_job(self._session, canonical, lock=lock)
        if job is None or job.organization_id != principal.organization_id:
            raise NotFoundError("Import not found", detail="IMPORT_NOT_FOUND")
        return job

    async def page(self, principal: Principal, page: PageRequest) -> tuple[list[ImportJob], int]:
        """The organization's jobs, newest first."""
        mine = import_jobs.c.organization_id == principal.organization_id
        total = await self._session.scalar(sa.select(sa.func.count()).select_from(import_jobs).where(mine))
        rows = await self._session.execute(
            sa.select(import_jobs)
            .where(mine)
            .order_by(import_jobs.c.created_at.desc(), import_jobs.c.id)
            .offset(page.offset)
            .limit(page.page_size)
        )
        now = datetime.now(UTC)
        return [job_from_row(row, now) for row in rows], int(total or 0)

    async def end(self, job: ImportJob, status: JobStatus, *, reason: str = "") -> ImportFinished | None:
        """Moves an active job to an end state; the ImportFinished it causes, or None if it had ended already."""
        return await _end(self._session, job, status, reason)

    async def rejections(self, job: ImportJob) -> list[csv_format.RejectedRow]:
        rows = await self._session.execute(
            sa.select(import_rejections.c.row_number, import_rejections.c.cells, import_rejections.c.reason)
            .where(import_rejections.c.job_id == job.id)
            .order_by(import_rejections.c.row_number)
        )
        return [csv_format.RejectedRow(row.row_number, list(row.cells), row.reason) for row in rows]


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


async def _end(session: AsyncSession, job: ImportJob, status: JobStatus, reason: str) -> ImportFinished | None:
    ended = await session.scalar(
        import_jobs.update()
        .where(import_jobs.c.id == job.id, import_jobs.c.status.in_([s.value for s in ACTIVE_STATUSES]))
        .values(
            status=status.value, failure_reason=reason, finished_at=sa.func.now(), updated_at=sa.func.now()
        )
        .returning(import_jobs.c.id)
    )
    if ended is None:
        return None
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
    return ImportFinished(
        job_id=job.id, status=status.value.lower(), registered=registered, merged=merged, rejected=rejected
    )
