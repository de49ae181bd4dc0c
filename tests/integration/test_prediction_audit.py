"""The prediction service's audit trail on a real PostgreSQL and the real AI engine (baseline model only):
a job requested (properties, model, molecule count) and its end — completed or failed, recorded by the
worker's last batch for whoever asked — are one AuditRecorded each, in the change's transaction; a refused
request records nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.prediction import bootstrap
from services.prediction.domain.jobs import MoleculeInput, new_job
from services.prediction.engine_client import EngineClient, EngineSettings
from services.prediction.service.batches import BatchProcessor
from services.prediction.service.catalogue import ModelCatalogue
from services.prediction.service.predictions import PredictionService, queue_job
from services.prediction.store import SCHEMA, PredictionUnitOfWork, transactions
from services.runtime.auth import Principal
from services.runtime.db import make_engine
from services.runtime.errors import ValidationError
from services.runtime.molecule_client import MoleculeClient
from services.runtime.uow import Transactions
from tests.integration.audit_outbox import Audited, audit_trail, audited
from tests.integration.test_prediction_engine import Engine
from tests.integration.test_prediction_engine import ai_engine as ai_engine  # the engine process, reused


@dataclass
class World:
    database: AsyncEngine
    predictions: Transactions[PredictionUnitOfWork]
    client: EngineClient

    async def trail(self, job_id: str) -> list[Audited]:
        return await audited(self.database, SCHEMA, "prediction", job_id)

    async def run(self, organization_id: str, requested_by: str, smiles: list[str]) -> str:
        """A job of logp for these structures, queued and then processed batch by batch as a worker does."""
        job = new_job(
            job_id=str(uuid.uuid4()), organization_id=organization_id, requested_by=requested_by,
            molecules=[MoleculeInput(str(uuid.uuid4()), s) for s in smiles], properties=["logp"], model="",
            reason="api",
        )  # fmt: skip
        await queue_job(self.predictions, job)
        for index in range(len(job.batches)):
            await BatchProcessor(self.predictions, self.client).process(job.id, index)
        return job.id


@pytest.fixture
async def world(database_url: str, ai_engine: Engine) -> AsyncIterator[World]:
    bootstrap.MIGRATIONS.upgrade(database_url)
    database = make_engine(database_url, SCHEMA)
    client = EngineClient(EngineSettings(url=ai_engine.url, retries=1, backoff=0.05))
    try:
        yield World(database, transactions(database), client)
    finally:
        await client.close()
        await database.dispose()


async def test_a_job_s_request_and_end_are_audited(world: World) -> None:
    organization, requester = str(uuid.uuid4()), str(uuid.uuid4())
    job_id = await world.run(organization, requester, ["CCO", "c1ccccc1O"])
    requested, completed = await world.trail(job_id)
    assert all((e.actor_id, e.organization_id) == (requester, organization) for e in (requested, completed))
    assert (requested.action, requested.event.target_type) == ("prediction.requested", "prediction_job")
    assert requested.details == {"properties": "logp", "model": "", "molecules": "2", "reason": "api"}
    assert completed.action == "prediction.completed" and completed.event.outcome == completed.event.SUCCESS
    assert completed.details == {"total": "2", "completed": "2", "failed": "0"}

    failing = await world.run(organization, requester, ["C1CC("])  # a structure the engine cannot read
    requested, failed = await world.trail(failing)
    assert (requested.action, failed.action) == ("prediction.requested", "prediction.failed")
    assert failed.event.outcome == failed.event.FAILURE and (failed.actor_id, failed.organization_id) == (
        requester, organization,
    )  # fmt: skip
    assert failed.details == {"total": "1", "completed": "0", "failed": "1"}


async def test_a_refused_request_records_nothing(world: World) -> None:
    who = Principal(str(uuid.uuid4()), str(uuid.uuid4()), "PHARMA", frozenset({"pharma_scientist"}))
    molecules = MoleculeClient("127.0.0.1:9")  # never asked: the requests are refused before
    service = PredictionService(world.predictions, ModelCatalogue(world.client), molecules)
    try:
        with pytest.raises(ValidationError):
            await service.create(who, [str(uuid.uuid4())], [], "", {})
        with pytest.raises(ValidationError):  # the engine's catalogue has no such property
            await service.create(who, [str(uuid.uuid4())], ["no_such_property"], "", {})
    finally:
        await molecules.close()
    assert [e for e in await audit_trail(world.database, SCHEMA, "prediction") if e.actor_id == who.subject] == []
