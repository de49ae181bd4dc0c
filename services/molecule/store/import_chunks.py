"""An import's chunks in PostgreSQL: the claim that makes a chunk exactly-once, its counts and kept
results, its rejected rows, the job's counters, and what the finished import registered."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from molbridge.events.v1.molecule_pb2 import MoleculeStructure
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.molecule.domain.imports import ACTIVE_STATUSES, ChunkCounts, JobStatus, Phase
from services.molecule.store.tables import import_chunks, import_jobs, import_rejections, molecule_provenance, molecules
from services.runtime import csv_format


class ImportChunkRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def done(self, job_id: str, index: int, phase: Phase) -> bool:
        return bool(
            await self._session.scalar(sa.select(sa.literal(True)).where(_chunk_row(job_id, index, phase)))
        )

    async def claim(self, job_id: str, index: int, phase: Phase) -> bool:
        """Insert the chunk's row first: a concurrent copy of the same chunk waits here, then finds it."""
        claimed = await self._session.scalar(
            insert(import_chunks)
            .values(
                job_id=job_id,
                chunk_index=index,
                phase=phase.value,
                processed_rows=0,
                registered=0,
                merged=0,
                rejected=0,
            )
            .on_conflict_do_nothing()
            .returning(import_chunks.c.chunk_index)
        )
        return claimed is not None

    async def record(
        self, job_id: str, index: int, phase: Phase, counts: ChunkCounts, *, results: bytes | None = None
    ) -> None:
        await self._session.execute(
            import_chunks.update()
            .where(_chunk_row(job_id, index, phase))
            .values(
                processed_rows=counts.processed,
                registered=counts.registered,
                merged=counts.merged,
                rejected=counts.rejected,
                results=results,
            )
        )

    async def kept_results(self, job_id: str, index: int) -> bytes | None:
        """A validated chunk's RDKit results (reject_all's first pass)."""
        return await self._session.scalar(
            sa.select(import_chunks.c.results).where(_chunk_row(job_id, index, Phase.VALIDATE))
        )

    async def save_rejections(self, job_id: str, rejected: list[csv_format.RejectedRow]) -> None:
        if rejected:
            await self._session.execute(
                insert(import_rejections).on_conflict_do_nothing(),
                [
                    {"job_id": job_id, "row_number": r.row_number, "cells": r.cells, "reason": r.reason}
                    for r in rejected
                ],
            )

    async def advance(self, job_id: str, counts: ChunkCounts, *, chunks: int = 0) -> Any | None:
        """Add a chunk's counts to its job; None if the job has ended (the caller rolls the chunk back).

        Every chunk of a job takes this row's lock last, so chunks commit one after the other here and
        the one that sees chunks_done == chunk_count is the last.
        """
        active = [status.value for status in ACTIVE_STATUSES]
        return (
            await self._session.execute(
                import_jobs.update()
                .where(import_jobs.c.id == job_id, import_jobs.c.status.in_(active))
                .values(
                    processed_rows=import_jobs.c.processed_rows + counts.processed,
                    registered=import_jobs.c.registered + counts.registered,
                    merged=import_jobs.c.merged + counts.merged,
                    rejected=import_jobs.c.rejected + counts.rejected,
                    chunks_done=import_jobs.c.chunks_done + chunks,
                    status=JobStatus.PROCESSING.value,
                    started_at=sa.func.coalesce(import_jobs.c.started_at, sa.func.now()),
                    updated_at=sa.func.now(),
                )
                .returning(
                    import_jobs.c.processed_rows,
                    import_jobs.c.total_rows,
                    import_jobs.c.chunks_done,
                    import_jobs.c.chunk_count,
                    import_jobs.c.rejected,
                )
            )
        ).one_or_none()

    async def mark_started(self, job_id: str) -> None:
        """The job's clock starts when a worker first takes one of its chunks (rows/s and ETA count from it)."""
        await self._session.execute(
            import_jobs.update()
            .where(import_jobs.c.id == job_id, import_jobs.c.status == JobStatus.QUEUED.value)
            .values(status=JobStatus.PROCESSING.value, started_at=sa.func.now(), updated_at=sa.func.now())
        )

    async def imported_structures(self, job_id: str) -> list[MoleculeStructure]:
        """The molecules the import registered or merged, with their structures, in id order."""
        imported = sa.select(molecule_provenance.c.molecule_id).where(molecule_provenance.c.job_id == job_id)
        return [
            MoleculeStructure(molecule_id=str(row.id), smiles=row.canonical_smiles)
            for row in await self._session.execute(
                sa.select(molecules.c.id, molecules.c.canonical_smiles)
                .where(molecules.c.id.in_(imported))
                .order_by(molecules.c.id)
            )
        ]


def _chunk_row(job_id: str, index: int, phase: Phase) -> sa.ColumnElement[bool]:
    return sa.and_(
        import_chunks.c.job_id == job_id,
        import_chunks.c.chunk_index == index,
        import_chunks.c.phase == phase.value,
    )
