"""Prediction use cases, shared by the gRPC servicer and the bus worker.

Decisions:
- Structures travel with the request: the RPC path reads them from the molecule service
  (BatchGetMolecules, with the caller's own credentials forwarded, so the molecule service applies
  its organization scoping), together with the molecules' numeric values that the desirability score
  starts from; the bus path gets both in the PredictionRequested event (an event without values:
  the score starts from the new predictions alone). The batch rows keep them, so workers need
  neither the molecule service nor a service identity.
- Properties and model are checked against the engine's catalogue at request time (400 naming the
  field and listing what is accepted). Bus requests are not: an import asked for them already, and
  the engine reports a property it does not predict as unsupported.
- Unknown (or another organization's) molecule ids make the request a 404 naming them; nothing is
  queued. A molecule service that cannot answer is a 502: the request cannot be queued at all.
- Creating needs pharma_scientist (or pharma_admin / system_admin); reading needs membership of the
  organization. Another organization's job is "not found".
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from molbridge.events.v1.prediction_pb2 import PredictionBatchRequested

from services.prediction.domain import results_csv
from services.prediction.domain.catalogue import Catalogue
from services.prediction.domain.jobs import (
    QUEUE,
    WRITER_ROLES,
    JobStatus,
    MoleculeInput,
    NewJob,
    Prediction,
    check_request,
    job_id_for_event,
    new_job,
)
from services.prediction.domain.score import SourcedValue, is_component
from services.prediction.service.catalogue import ModelCatalogue
from services.prediction.service.ports import MoleculeDirectory
from services.prediction.store import PredictionUnitOfWork
from services.prediction.store.repositories import ResultKey
from services.runtime.audit import audit_event
from services.runtime.auth import Principal
from services.runtime.db import canonical_uuid
from services.runtime.errors import NotFoundError, ValidationError
from services.runtime.molecule_client import MoleculeRecord
from services.runtime.pagination import PageRequest
from services.runtime.uow import Transactions

BATCH_LIST_LIMIT = 1000  # molecule ids per BatchListPredictions call


@dataclass(frozen=True)
class ResultsDownload:
    """A CSV file of a job's values: its name, and its text in chunks (header first)."""

    filename: str
    chunks: AsyncIterator[str]


class PredictionService:
    def __init__(
        self,
        uow: Transactions[PredictionUnitOfWork],
        catalogue: ModelCatalogue,
        molecules: MoleculeDirectory,
    ) -> None:
        self._uow = uow
        self._catalogue = catalogue
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
        await self._catalogue.check(wanted, model)
        found, missing = await self._molecules.batch_get(ids, credentials)
        if missing:
            shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
            raise NotFoundError(f"{len(missing)} molecule(s) not found: {shown}")
        job = new_job(
            job_id=str(uuid.uuid4()),
            organization_id=principal.organization_id,
            requested_by=principal.subject,
            molecules=[_molecule_input(record) for record in found],
            properties=wanted,
            model=model,
            reason="api",
        )
        return await queue_job(self._uow, job)

    async def status(self, principal: Principal, job_id: str) -> JobStatus:
        async with self._uow() as uow:
            return await self._readable_job(uow, principal, job_id)

    async def results(self, principal: Principal, job_id: str, page: PageRequest) -> tuple[list[Prediction], int]:
        """A page of the job's values so far, and how many there are."""
        async with self._uow() as uow:
            job = await self._readable_job(uow, principal, job_id)
            return await uow.results.page_of_job(job.job_id, page)

    async def results_csv(self, principal: Principal, job_id: str) -> ResultsDownload:
        """Every value of the job so far as CSV text chunks. The job is looked up now (so an unknown
        one is an error before anything is sent); the rows are read while the chunks are consumed,
        one short transaction per chunk, so a slow client holds no connection between chunks."""
        async with self._uow() as uow:
            job = await self._readable_job(uow, principal, job_id)
        return ResultsDownload(results_csv.filename(job.job_id), self._csv_chunks(job.job_id))

    async def _csv_chunks(self, job_id: str) -> AsyncIterator[str]:
        yield results_csv.header()
        after: ResultKey | None = None
        while True:
            async with self._uow() as uow:
                found = await uow.results.of_job_after(job_id, after, results_csv.ROWS_PER_CHUNK)
            if found:
                yield results_csv.rows(found)
            if len(found) < results_csv.ROWS_PER_CHUNK:
                return
            after = (found[-1].molecule_id, found[-1].property)

    @staticmethod
    async def _readable_job(uow: PredictionUnitOfWork, principal: Principal, job_id: str) -> JobStatus:
        job = await uow.jobs.status(job_id, principal.organization_id)
        if job is None:
            raise NotFoundError("Prediction job not found")
        return job

    async def molecule_predictions(self, principal: Principal, molecule_id: str) -> list[Prediction]:
        """The latest prediction of each property of one of the organization's molecules (none: empty)."""
        if canonical_uuid(molecule_id) is None:
            raise NotFoundError("Molecule not found")
        async with self._uow() as uow:
            return await uow.results.latest_for_molecule(principal.organization_id, molecule_id)

    async def batch_predictions(
        self, principal: Principal, molecule_ids: Sequence[str], properties: Sequence[str], model_name: str
    ) -> list[Prediction]:
        """Every model version's latest prediction of the organization's molecules among `molecule_ids` (at most
        BATCH_LIST_LIMIT; unknown, malformed or another organization's ids have none)."""
        if len(molecule_ids) > BATCH_LIST_LIMIT:
            problem = f"at most {BATCH_LIST_LIMIT} ids (got {len(molecule_ids)})"
            raise ValidationError(f"molecule_ids: {problem}", field_violations=[("molecule_ids", problem)])
        async with self._uow() as uow:
            wanted = [p.strip() for p in properties if p.strip()]
            return await uow.results.latest_of_versions(
                principal.organization_id, molecule_ids, wanted, model_name.strip()
            )

    async def models(self, principal: Principal) -> Catalogue:
        """The engine's models as it lists them now (the last list seen while it cannot answer)."""
        del principal  # any authenticated caller may read it
        return await self._catalogue.get(max_age=0)


class RequestedPredictions:
    """Prediction requests that arrive as events (CSV imports with `predict`)."""

    def __init__(self, uow: Transactions[PredictionUnitOfWork]) -> None:
        self._uow = uow

    async def create(
        self,
        event_id: str,
        *,
        organization_id: str,
        requested_by: str,
        molecules: Sequence[MoleculeRecord],
        properties: Sequence[str],
        reason: str,
    ) -> JobStatus:
        """A PredictionRequested event's job; the same event delivered again creates nothing new.
        ValidationError when the event cannot make a job."""
        check_request([m.id for m in molecules], properties, "")
        job = new_job(
            job_id=job_id_for_event(event_id),
            organization_id=organization_id,
            requested_by=requested_by,
            molecules=[_molecule_input(m) for m in molecules],
            properties=properties,
            model="",
            reason=reason,
        )
        return await queue_job(self._uow, job)


async def queue_job(transactions: Transactions[PredictionUnitOfWork], job: NewJob) -> JobStatus:
    """Store the job and its batches and queue one work item per batch, in one transaction. A job
    id that exists already (a redelivered request) changes nothing and returns that job."""
    async with transactions() as uow:
        if not await uow.jobs.add(job):
            existing = await uow.jobs.status(job.id)
            assert existing is not None  # it exists: that is why it was not added
            return existing
        for index in range(len(job.batches)):
            uow.enqueue(
                QUEUE,
                PredictionBatchRequested(job_id=job.id, batch_index=index),
                organization_id=job.organization_id,
                actor_id=job.requested_by,
            )
        details = {"properties": ",".join(job.properties), "model": job.model, "molecules": str(job.total),
                   "reason": job.reason}
        uow.record(
            audit_event("prediction.requested", target_type="prediction_job", target_id=job.id, details=details),
            organization_id=job.organization_id,
            actor_id=job.requested_by,
        )
    return job.queued()


def _molecule_input(record: MoleculeRecord) -> MoleculeInput:
    known = tuple(SourcedValue(v.name, v.source, v.value) for v in record.numeric_values if is_component(v.name))
    return MoleculeInput(record.id, record.canonical_smiles, known)
