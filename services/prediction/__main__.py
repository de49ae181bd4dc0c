"""Composition root of the prediction service: `python -m services.prediction`.

Serves PredictionService and publishes the schema's outbox (jobs' batch work items); batches are
processed by `python -m services.prediction.worker` processes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from molbridge.prediction.v1 import prediction_service_pb2_grpc as pb_grpc

from bus.runner import run_bus
from services.prediction.engine_client import EngineClient, EngineSettings
from services.prediction.jobs import PredictionService
from services.prediction.server import PredictionServicer, RemoteMolecules
from services.prediction.store import SCHEMA
from services.runtime import migrations, server, telemetry
from services.runtime.db import UnitOfWork, make_engine
from services.runtime.identity_client import RemoteIdentity, remote_authenticator
from services.runtime.logs import configure_logging
from services.runtime.revocation import revocation_feed
from services.runtime.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def build(settings: Settings) -> server.ServiceApp:
    engine = make_engine(settings.database_url, SCHEMA)
    telemetry.instrument_engine(engine)
    identity = RemoteIdentity(settings.addr_of("identity"))
    molecules = RemoteMolecules(settings.addr_of("molecule"))
    ai_engine = EngineClient(EngineSettings.from_env(settings.env))
    service = PredictionService(UnitOfWork(engine), ai_engine, molecules)

    async def publish_outbox() -> None:
        await run_bus(
            settings.nats_url, name="prediction", engine=engine, schema=SCHEMA,
            consumers=[revocation_feed(identity.revocations, "prediction")],
        )

    return server.ServiceApp(
        settings=settings,
        servicers=[(pb_grpc.add_PredictionServiceServicer_to_server, PredictionServicer(service))],
        authenticator=remote_authenticator(identity),
        background=[publish_outbox],
        on_stop=[identity.close, molecules.close, ai_engine.close, engine.dispose],
    )


async def serve(settings: Settings) -> None:
    await server.run(build(settings))


def main() -> None:
    settings = Settings.from_env("prediction")
    configure_logging("prediction", settings.log_level)
    telemetry.configure_tracing("prediction", settings.data_dir, settings.otlp_endpoint)
    migrations.upgrade(settings.database_url, SCHEMA, MIGRATIONS)
    try:
        asyncio.run(serve(settings))
    finally:
        telemetry.shutdown_tracing()


if __name__ == "__main__":
    main()
