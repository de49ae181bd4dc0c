"""Composition root of the prediction service: everything is built here, once, and nowhere else.

`python -m services.prediction` serves PredictionService and publishes the schema's outbox (jobs'
batch work items); `python -m services.prediction.worker` processes batches and import requests and
publishes PredictionCompleted events.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from molbridge.prediction.v1 import prediction_service_pb2_grpc as pb_grpc
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from bus.connection import connect
from bus.consumer import Consumer
from bus.relay import OutboxRelay
from bus.runner import run_bus
from bus.streams import ensure_streams
from services.prediction import worker
from services.prediction.engine_client import EngineClient, EngineSettings
from services.prediction.server import PredictionServicer
from services.prediction.service.batches import BatchProcessor
from services.prediction.service.catalogue import ModelCatalogue
from services.prediction.service.ports import MoleculeDirectory
from services.prediction.service.predictions import PredictionService, RequestedPredictions
from services.prediction.store import SCHEMA, transactions
from services.runtime import migrations, server, telemetry
from services.runtime.db import make_engine
from services.runtime.identity_client import RemoteIdentity, remote_authenticator
from services.runtime.logs import configure_logging
from services.runtime.molecule_client import MoleculeClient
from services.runtime.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("molbridge.prediction")


def build_service(database: AsyncEngine, engine: EngineClient, molecules: MoleculeDirectory) -> PredictionService:
    """The use cases the servicer serves."""
    return PredictionService(transactions(database), ModelCatalogue(engine), molecules)


def worker_runners(js: JetStreamContext, database: AsyncEngine, engine: EngineClient) -> list[Consumer | OutboxRelay]:
    """Everything a worker process runs: its subscriptions and the outbox relay of its events."""
    uow = transactions(database)
    handlers = worker.consumers(
        js, worker.BatchHandler(BatchProcessor(uow, engine)), worker.RequestHandler(RequestedPredictions(uow))
    )
    return [*handlers, OutboxRelay(database, SCHEMA, js)]


def build_server(settings: Settings) -> server.ServiceApp:
    database = make_engine(settings.database_url, SCHEMA)
    telemetry.instrument_engine(database)
    identity = RemoteIdentity(settings.addr_of("identity"))
    molecules = MoleculeClient(settings.addr_of("molecule"))
    engine = EngineClient(EngineSettings.from_env(settings.env))
    service = build_service(database, engine, molecules)

    async def publish_outbox() -> None:
        await run_bus(settings.nats_url, name="prediction", engine=database, schema=SCHEMA)

    return server.ServiceApp(
        settings=settings,
        servicers=[(pb_grpc.add_PredictionServiceServicer_to_server, PredictionServicer(service))],
        authenticator=remote_authenticator(identity),
        background=[publish_outbox],
        on_stop=[identity.close, molecules.close, engine.close, database.dispose],
    )


async def serve_worker(settings: Settings, stopping: asyncio.Event) -> None:
    """Consume batches and requests (and publish the schema's outbox) until `stopping` is set."""
    database = make_engine(settings.database_url, SCHEMA, pool_size=worker.IN_FLIGHT + 3)
    telemetry.instrument_engine(database)
    engine = EngineClient(EngineSettings.from_env(settings.env))
    nats = await connect(settings.nats_url, name="prediction-worker")
    try:
        js = nats.jetstream()
        await ensure_streams(js)
        parts = worker_runners(js, database, engine)
        tasks = [asyncio.create_task(part.run()) for part in parts]
        log.info("prediction worker: engine %s", engine.settings.url)
        await stopping.wait()
        for part in parts:
            part.stop()
        await asyncio.gather(*tasks)
    finally:
        await nats.close()
        await engine.close()
        await database.dispose()


def _start(process_name: str, settings: Settings) -> None:
    configure_logging(process_name, settings.log_level)
    telemetry.configure_tracing(process_name, settings.data_dir, settings.otlp_endpoint)
    migrations.upgrade(settings.database_url, SCHEMA, MIGRATIONS)


def run_server() -> None:
    settings = Settings.from_env("prediction")
    _start("prediction", settings)

    async def serve() -> None:  # channels belong to the loop they are made in: build inside it
        await server.run(build_server(settings))

    try:
        asyncio.run(serve())
    finally:
        telemetry.shutdown_tracing()


def run_worker() -> None:
    settings = Settings.from_env("prediction")
    _start("prediction-worker", settings)

    async def serve() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await serve_worker(settings, stopping)

    try:
        asyncio.run(serve())
    finally:
        telemetry.shutdown_tracing()
