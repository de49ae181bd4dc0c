"""Composition root of the prediction service: typed settings, adapters and use cases, built once.

`python -m services.prediction` serves PredictionService and relays the schema's outbox (jobs' batch
work items); `python -m services.prediction.worker` processes batches and import requests and relays
PredictionCompleted events. Both run through services.runtime.process (settings, logs, tracing,
migrations — the server migrates, workers wait —, health, graceful stop).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from molbridge.prediction.v1 import prediction_service_pb2_grpc as pb_grpc
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncEngine

from services.prediction import worker
from services.prediction.engine_client import DEFAULT_URL, EngineClient, EngineSettings
from services.prediction.server import PredictionServicer
from services.prediction.service.batches import BatchProcessor
from services.prediction.service.catalogue import ModelCatalogue
from services.prediction.service.ports import MoleculeDirectory
from services.prediction.service.predictions import PredictionService, RequestedPredictions
from services.prediction.store import SCHEMA, transactions
from services.runtime import telemetry
from services.runtime.identity_client import RemoteIdentity, remote_authenticator
from services.runtime.migrations import MigrationSpec
from services.runtime.molecule_client import MoleculeClient
from services.runtime.process import Hook, Outbox, Process
from services.runtime.revocation import revocation_feed
from services.runtime.settings import Settings

MIGRATIONS = MigrationSpec(SCHEMA, Path(__file__).parent / "migrations")


class PredictionSettings(Settings):
    """The AI engine client's variables, on top of what every process reads (defaults: EngineSettings)."""

    ai_engine_url: str = Field(DEFAULT_URL, pattern=r"^https?://", validation_alias="AI_ENGINE_URL")
    engine_timeout_s: float = Field(10.0, gt=0, validation_alias="MOLBRIDGE_ENGINE_TIMEOUT_S")
    engine_retries: int = Field(3, ge=0, le=20, validation_alias="MOLBRIDGE_ENGINE_RETRIES")
    engine_backoff_s: float = Field(0.5, ge=0, validation_alias="MOLBRIDGE_ENGINE_BACKOFF_S")
    engine_breaker_threshold: int = Field(5, ge=1, validation_alias="MOLBRIDGE_ENGINE_BREAKER_THRESHOLD")
    engine_breaker_reset_s: float = Field(60.0, ge=0, validation_alias="MOLBRIDGE_ENGINE_BREAKER_RESET_S")
    engine_poll_s: float = Field(0.2, gt=0, validation_alias="MOLBRIDGE_ENGINE_POLL_S")
    engine_job_timeout_s: float = Field(600.0, gt=0, validation_alias="MOLBRIDGE_ENGINE_JOB_TIMEOUT_S")

    def engine(self) -> EngineSettings:
        return EngineSettings(
            url=self.ai_engine_url.rstrip("/"),
            timeout=self.engine_timeout_s,
            retries=self.engine_retries,
            backoff=self.engine_backoff_s,
            breaker_threshold=self.engine_breaker_threshold,
            breaker_reset=self.engine_breaker_reset_s,
            poll_interval=self.engine_poll_s,
            job_timeout=self.engine_job_timeout_s,
        )


def build_service(database: AsyncEngine, engine: EngineClient, molecules: MoleculeDirectory) -> PredictionService:
    """The use cases the servicer serves."""
    return PredictionService(transactions(database), ModelCatalogue(engine), molecules)


def build_server(settings: PredictionSettings) -> Process:
    database = telemetry.traced_engine(settings.database_url, SCHEMA)
    identity = RemoteIdentity(settings.addr_of("identity"))
    molecules = MoleculeClient(settings.addr_of("molecule"))
    engine = EngineClient(settings.engine())
    return Process(
        servicers=[
            (
                pb_grpc.add_PredictionServiceServicer_to_server,
                PredictionServicer(build_service(database, engine, molecules)),
            )
        ],
        authenticator=remote_authenticator(identity),
        outbox=Outbox(database, SCHEMA),
        consumers=[revocation_feed(identity.revocations, "prediction")],  # revoked tokens refused at once
        on_stop=[identity.close, molecules.close, engine.close, database.dispose],
    )


def worker_process(database: AsyncEngine, engine: EngineClient, *, on_stop: Sequence[Hook] = ()) -> Process:
    """The worker's subscriptions over these adapters, and the relay of the events they record."""
    uow = transactions(database)
    return Process(
        subscriptions=worker.subscriptions(BatchProcessor(uow, engine), RequestedPredictions(uow)),
        outbox=Outbox(database, SCHEMA),
        on_stop=on_stop,
    )


def build_worker(settings: PredictionSettings) -> Process:
    database = telemetry.traced_engine(settings.database_url, SCHEMA, pool_size=worker.IN_FLIGHT + 3)
    engine = EngineClient(settings.engine())
    return worker_process(database, engine, on_stop=[engine.close, database.dispose])
