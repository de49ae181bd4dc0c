"""Repositories over the prediction tables. Reads on behalf of a caller filter by its organization,
so another organization's job simply does not exist."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.prediction.domain.jobs import Batch, Job, JobStatus, MoleculeInput, NewJob, Prediction, Status
from services.prediction.domain.score import SourcedValue
from services.prediction.store.tables import batches, jobs, results
from services.runtime.db import canonical_uuid
from services.runtime.pagination import PageRequest

ResultKey = tuple[str, str]  # (molecule_id, property): where a keyset read resumes


@dataclass(frozen=True)
class Progress:
    """A job's counters right after one more batch finished."""

    batches_done: int
    batch_count: int
    failed: int
    total: int


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, job: NewJob) -> bool:
        """Insert the job and its batches; False (and nothing written) when the id exists already."""
        created = await self._session.scalar(
            insert(jobs)
            .values(
                id=job.id,
                organization_id=job.organization_id,
                requested_by=job.requested_by,
                properties=list(job.properties),
                model=job.model,
                reason=job.reason,
                status=job.status.value,
                total=job.total,
                batch_count=len(job.batches),
            )
            .on_conflict_do_nothing()
            .returning(jobs.c.id)
        )
        if created is None:
            return False
        if job.batches:
            await self._session.execute(
                insert(batches),
                [
                    {"job_id": job.id, "batch_index": i, "molecules": [_molecule_json(m) for m in part]}
                    for i, part in enumerate(job.batches)
                ],
            )
        return True

    async def status(self, job_id: str, organization_id: str | None = None) -> JobStatus | None:
        """The job's progress; None when it does not exist (or belongs to another organization)."""
        canonical = canonical_uuid(job_id)
        if canonical is None:
            return None
        query = sa.select(jobs).where(jobs.c.id == canonical)
        if organization_id is not None:
            query = query.where(jobs.c.organization_id == organization_id)
        row = (await self._session.execute(query)).first()
        return None if row is None else JobStatus(str(row.id), Status(row.status), row.total, row.completed, row.failed)

    async def for_worker(self, job_id: str) -> Job | None:
        row = (await self._session.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
        if row is None:
            return None
        return Job(str(row.id), str(row.organization_id), row.requested_by, tuple(row.properties), row.model)

    async def count_batch(self, job_id: str, *, completed: int, failed: int) -> Progress:
        """Add one finished batch's molecules to the job's counters (atomically: workers finish the
        batches of one job concurrently)."""
        row = (
            await self._session.execute(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(
                    completed=jobs.c.completed + completed,
                    failed=jobs.c.failed + failed,
                    batches_done=jobs.c.batches_done + 1,
                    updated_at=sa.func.now(),
                )
                .returning(jobs.c.batches_done, jobs.c.batch_count, jobs.c.failed, jobs.c.total)
            )
        ).one()
        return Progress(row.batches_done, row.batch_count, row.failed, row.total)

    async def set_status(self, job_id: str, status: Status) -> None:
        await self._session.execute(jobs.update().where(jobs.c.id == job_id).values(status=status.value))


class BatchRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, job_id: str, index: int) -> Batch | None:
        row = (
            await self._session.execute(
                sa.select(batches).where(batches.c.job_id == job_id, batches.c.batch_index == index)
            )
        ).first()
        if row is None:
            return None
        molecules = tuple(_molecule(item) for item in row.molecules)
        return Batch(str(row.job_id), row.batch_index, molecules, row.done_at is not None)

    async def claim(self, job_id: str, index: int, *, failures: dict[str, str], unsupported: Sequence[str]) -> bool:
        """Mark the batch done with its outcome; False when another delivery of it committed first."""
        claimed = await self._session.scalar(
            batches.update()
            .where(batches.c.job_id == job_id, batches.c.batch_index == index, batches.c.done_at.is_(None))
            .values(done_at=sa.func.now(), failures=failures, unsupported=list(unsupported))
            .returning(batches.c.batch_index)
        )
        return claimed is not None


class ResultRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, job: Job, predictions: Sequence[Prediction]) -> None:
        if not predictions:
            return
        await self._session.execute(
            insert(results).on_conflict_do_nothing(),
            [
                {
                    "job_id": job.id,
                    "molecule_id": p.molecule_id,
                    "property": p.property,
                    "organization_id": job.organization_id,
                    "value": p.value,
                    "units": p.units,
                    "confidence": p.confidence,
                    "model_name": p.model_name,
                    "model_version": p.model_version,
                }
                for p in predictions
            ],
        )

    async def page_of_job(self, job_id: str, page: PageRequest) -> tuple[list[Prediction], int]:
        """One page of the job's values in (molecule, property) order, and how many there are."""
        total = await self._session.scalar(sa.select(sa.func.count()).where(results.c.job_id == job_id))
        rows = await self._session.execute(
            sa.select(results)
            .where(results.c.job_id == job_id)
            .order_by(results.c.molecule_id, results.c.property)
            .offset(page.offset)
            .limit(page.page_size)
        )
        return [_prediction(r) for r in rows], int(total or 0)

    async def of_job_after(self, job_id: str, after: ResultKey | None, limit: int) -> list[Prediction]:
        """Up to `limit` of the job's values following `after` in (molecule, property) order: a
        keyset read over the primary key, so a download costs the same on its last chunk as on its first."""
        query = sa.select(results).where(results.c.job_id == job_id)
        if after is not None:
            molecule_id, property_name = after
            resume = sa.tuple_(
                sa.literal(molecule_id, results.c.molecule_id.type), sa.literal(property_name, results.c.property.type)
            )
            query = query.where(sa.tuple_(results.c.molecule_id, results.c.property) > resume)
        rows = await self._session.execute(query.order_by(results.c.molecule_id, results.c.property).limit(limit))
        return [_prediction(r) for r in rows]

    async def latest_for_molecule(self, organization_id: str, molecule_id: str) -> list[Prediction]:
        """The latest prediction of each property of one of the organization's molecules."""
        canonical = canonical_uuid(molecule_id)
        if canonical is None:
            return []
        rows = await self._session.execute(
            sa.select(results)
            .where(results.c.organization_id == organization_id, results.c.molecule_id == canonical)
            .order_by(results.c.property, results.c.created_at.desc())
        )
        latest: dict[str, Prediction] = {}
        for row in rows:  # a molecule has few rows: properties × jobs that predicted it
            latest.setdefault(row.property, _prediction(row))
        return list(latest.values())


    async def latest_of_versions(
        self, organization_id: str, molecule_ids: Sequence[str], properties: Sequence[str], model_name: str
    ) -> list[Prediction]:
        """Per (molecule, property, model name, model version) of the organization's molecules, the latest
        prediction (only `properties` and `model_name` when given); ids that are not UUIDs match nothing."""
        ids = sorted({c for c in (canonical_uuid(i) for i in molecule_ids) if c is not None})
        if not ids:
            return []
        query = sa.select(results).where(results.c.organization_id == organization_id, results.c.molecule_id.in_(ids))
        if properties:
            query = query.where(results.c.property.in_(list(properties)))
        if model_name:
            query = query.where(results.c.model_name == model_name)
        key = (results.c.molecule_id, results.c.property, results.c.model_name, results.c.model_version)
        rows = await self._session.execute(
            query.ext(distinct_on(*key)).order_by(*key, results.c.created_at.desc(), results.c.job_id.desc())
        )
        return [_prediction(r) for r in rows]


def _molecule_json(molecule: MoleculeInput) -> list[Any]:
    return [molecule.id, molecule.smiles, [[v.name, v.source, v.value] for v in molecule.known]]


def _molecule(item: Sequence[Any]) -> MoleculeInput:
    known = tuple(SourcedValue(str(n), str(s), float(v)) for n, s, v in (item[2] if len(item) > 2 else ()))
    return MoleculeInput(str(item[0]), str(item[1]), known)


def _prediction(row: Any) -> Prediction:
    return Prediction(
        str(row.molecule_id), row.property, row.value, row.units, row.confidence, row.model_name, row.model_version
    )
