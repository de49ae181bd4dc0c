"""Prediction jobs: the service layer shared by the gRPC servicer and the bus consumers.

A request (CreatePrediction, or a PredictionRequested event from a CSV import) becomes one job row
and batches of BATCH_SIZE molecules, each a PredictionBatchRequested work item on the WORK stream's
prediction_batches queue, written through the outbox in the job's transaction. Workers
(worker.py) take the batches to the engine. Nothing here talks to the engine except ListModels.

Decisions:
- Structures travel with the request: the RPC path reads them from the molecule service
  (BatchGetMolecules, with the caller's own credentials forwarded, so the molecule service applies
  its organization scoping); the bus path gets them in the PredictionRequested event. The batch rows
  keep them, so workers need neither the molecule service nor a service identity.
- Unknown (or another organization's) molecule ids make the request a 404 naming them; nothing is
  queued. A molecule service that cannot answer is a 502: the request cannot be queued at all.
- Creating needs pharma_scientist (or pharma_admin / system_admin); reading needs membership of the
  organization. Another organization's job is "not found".
- Status counts molecules: `completed` those predicted (batch done, not failed), `failed` those the
  engine could not predict (bad structure); a job whose every molecule failed ends "failed".
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from molbridge.events.v1.prediction_pb2 import PredictionBatchRequested
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bus.outbox import add_event
from bus.subjects import work_subject
from services.molecule.properties import PREDICTABLE_PROPERTIES
from services.prediction.engine_client import (
    CircuitOpen,
    EngineClient,
    EngineRejected,
    EngineUnavailable,
    Prediction,
)
from services.prediction.store import SCHEMA, batches, jobs, results
from services.runtime.auth import Principal
from services.runtime.db import UnitOfWork, canonical_uuid
from services.runtime.errors import IntegrationError, NotFoundError, ValidationError

EVENT_SOURCE = "prediction"
QUEUE = "prediction_batches"
BATCH_SIZE = 100
MAX_MOLECULES = 10_000
MAX_MODEL_LENGTH = 100
WRITER_ROLES = ("pharma_scientist",)
QUEUED, PROCESSING, COMPLETED, FAILED = "queued", "processing", "completed", "failed"
_JOB_NAMESPACE = uuid.UUID("0b8f3a52-5d0c-4f3e-9a57-0c5f1f0e7a11")  # job ids of bus requests


def split(items: Sequence[Any], size: int = BATCH_SIZE) -> list[list[Any]]:
    """Consecutive batches of at most `size` items, in order."""
    if size < 1:
        raise ValueError("size must be at least 1")
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def job_id_for_event(event_id: str) -> str:
    """The job a PredictionRequested event creates: the same id on every delivery (idempotent)."""
    return str(uuid.uuid5(_JOB_NAMESPACE, event_id))


class MoleculeDirectory(Protocol):
    async def structures(
        self, ids: Sequence[str], credentials: Mapping[str, str]
    ) -> tuple[list[tuple[str, str]], list[str]]:
        """(id, smiles) of the caller's molecules found, and the ids not found; raises IntegrationError."""
        ...


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    status: str
    total: int
    completed: int
    failed: int


Result = Prediction  # a stored prediction reads back as the engine gave it


class PredictionService:
    def __init__(self, uow: UnitOfWork, engine: EngineClient, molecules: MoleculeDirectory) -> None:
        self._uow = uow
        self._engine = engine
        self._molecules = molecules

    async def create(
        self,
        principal: Principal,
        molecule_ids: Sequence[str],
        properties: Sequence[str],
        model: str,
        credentials: Mapping[str, str],
    ) -> JobStatus:
        principal.require_any_role(*WRITER_ROLES)
        ids, wanted = check_request(molecule_ids, properties, model)
        found, missing = await self._molecules.structures(ids, credentials)
        if missing:
            shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
            raise NotFoundError(f"{len(missing)} molecule(s) not found: {shown}")
        async with self._uow() as session:
            return await enqueue(
                session,
                job_id=str(uuid.uuid4()),
                organization_id=principal.organization_id,
                requested_by=principal.subject,
                structures=found,
                properties=wanted,
                model=model,
                reason="api",
            )

    async def status(self, principal: Principal, job_id: str) -> JobStatus:
        async with self._uow() as session:
            return _status(await _job(session, principal, job_id))

    async def results(self, principal: Principal, job_id: str) -> list[Result]:
        async with self._uow() as session:
            job = await _job(session, principal, job_id)
            rows = await session.execute(
                sa.select(results).where(results.c.job_id == job.id).order_by(results.c.molecule_id, results.c.property)
            )
            return [_result(r) for r in rows]

    async def molecule_predictions(self, principal: Principal, molecule_id: str) -> list[Result]:
        """The latest prediction of each property of one of the organization's molecules (none: empty)."""
        canonical = canonical_uuid(molecule_id)
        if canonical is None:
            raise NotFoundError("Molecule not found")
        async with self._uow() as session:
            rows = await session.execute(
                sa.select(results)
                .where(results.c.organization_id == principal.organization_id, results.c.molecule_id == canonical)
                .order_by(results.c.property, results.c.created_at.desc())
            )
            latest: dict[str, Result] = {}
            for row in rows:  # a molecule has few rows: properties × jobs that predicted it
                latest.setdefault(row.property, _result(row))
            return list(latest.values())

    async def models(self) -> Any:
        try:
            return await self._engine.models()
        except (CircuitOpen, EngineUnavailable, EngineRejected) as error:
            raise IntegrationError(f"The AI engine is unavailable: {error}") from error


def check_request(molecule_ids: Sequence[str], properties: Sequence[str], model: str) -> tuple[list[str], list[str]]:
    """Validated, de-duplicated molecule ids (canonical form) and properties, in request order."""
    violations: list[tuple[str, str]] = []
    ids = list(dict.fromkeys(canonical_uuid(i) or i for i in molecule_ids))
    if not ids:
        violations.append(("molecule_ids", "at least one molecule id is required"))
    elif len(ids) > MAX_MOLECULES:
        violations.append(("molecule_ids", f"at most {MAX_MOLECULES:,} molecules per request"))
    wanted = list(dict.fromkeys(properties))
    if not wanted:
        violations.append(("properties", "at least one property is required"))
    for index, name in enumerate(wanted):
        if name not in PREDICTABLE_PROPERTIES:
            violations.append(
                (f"properties[{index}]", f"{name!r} is not predictable; one of {', '.join(PREDICTABLE_PROPERTIES)}")
            )
    if len(model) > MAX_MODEL_LENGTH:
        violations.append(("model", f"at most {MAX_MODEL_LENGTH} characters"))
    if violations:
        raise ValidationError(f"Invalid {violations[0][0]}: {violations[0][1]}", field_violations=violations)
    return ids, wanted


async def enqueue(
    session: AsyncSession,
    *,
    job_id: str,
    organization_id: str,
    requested_by: str,
    structures: Sequence[tuple[str, str]],
    properties: Sequence[str],
    model: str,
    reason: str,
) -> JobStatus:
    """Create the job, its batches and their work items in the caller's transaction. A job id that
    exists already (a redelivered request) changes nothing and returns that job."""
    parts = split(structures)
    created = await session.scalar(
        insert(jobs)
        .values(
            id=job_id,
            organization_id=organization_id,
            requested_by=requested_by,
            properties=list(properties),
            model=model,
            reason=reason,
            status=QUEUED if parts else COMPLETED,
            total=len(structures),
            batch_count=len(parts),
        )
        .on_conflict_do_nothing()
        .returning(jobs.c.id)
    )
    if created is None:
        return _status((await session.execute(sa.select(jobs).where(jobs.c.id == job_id))).one())
    if parts:
        await session.execute(
            insert(batches),
            [
                {"job_id": job_id, "batch_index": i, "molecules": [list(m) for m in part]}
                for i, part in enumerate(parts)
            ],
        )
    for index in range(len(parts)):
        await add_event(
            session,
            source=EVENT_SOURCE,
            payload=PredictionBatchRequested(job_id=job_id, batch_index=index),
            organization_id=organization_id,
            actor_id=requested_by,
            schema=SCHEMA,
            subject=work_subject(QUEUE),
        )
    return JobStatus(job_id, QUEUED if parts else COMPLETED, len(structures), 0, 0)


async def _job(session: AsyncSession, principal: Principal, job_id: str) -> Any:
    canonical = canonical_uuid(job_id)
    row = None
    if canonical is not None:
        row = (
            await session.execute(
                sa.select(jobs).where(jobs.c.id == canonical, jobs.c.organization_id == principal.organization_id)
            )
        ).first()
    if row is None:
        raise NotFoundError("Prediction job not found")
    return row


def _status(row: Any) -> JobStatus:
    return JobStatus(str(row.id), row.status, row.total, row.completed, row.failed)


def _result(row: Any) -> Result:
    return Result(
        str(row.molecule_id), row.property, row.value, row.units, row.confidence, row.model_name, row.model_version
    )
