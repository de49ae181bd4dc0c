"""Composition root of the molecule service: builds every part, then serves.

`python -m services.molecule` serves MoleculeService, SearchService, ImportService and
LibraryService; CSV chunks are processed by `python -m services.molecule.worker` processes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bus.runner import run_bus
from services.molecule.context import MoleculeContext, ServicePart
from services.molecule.predictions import PredictionConsumer
from services.molecule.server import imports, libraries, molecules, search
from services.molecule.store import SCHEMA
from services.runtime import migrations, server, telemetry
from services.runtime.db import UnitOfWork, make_engine
from services.runtime.identity_client import RemoteIdentity, remote_authenticator
from services.runtime.logs import configure_logging
from services.runtime.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def build(settings: Settings) -> server.ServiceApp:
    engine = make_engine(settings.database_url, SCHEMA)
    telemetry.instrument_engine(engine)
    ctx = MoleculeContext(settings=settings, engine=engine, uow=UnitOfWork(engine))
    identity = RemoteIdentity(settings.addr_of("identity"))
    parts: list[ServicePart] = [
        imports.build(ctx),
        molecules.build(ctx),
        libraries.build(ctx),
        search.build(ctx),
    ]

    predictions = PredictionConsumer(ctx.uow)  # PREDICTED values from the prediction service

    async def publish_outbox() -> None:
        await run_bus(
            settings.nats_url, name="molecule", engine=engine, schema=SCHEMA, consumers=[predictions.consumer]
        )

    return server.ServiceApp(
        settings=settings,
        servicers=[s for part in parts for s in part.servicers],
        authenticator=remote_authenticator(identity),
        background=[publish_outbox, *(job for part in parts for job in part.background)],
        on_stop=[*(hook for part in parts for hook in part.on_stop), identity.close, engine.dispose],
        liveness=[ctx.shared[search.SEARCH_MATCHER].problem],  # a wedged structure matcher: NOT_SERVING
    )


async def serve(settings: Settings) -> None:
    # Built inside the running loop: gRPC aio channels and engines bind to the loop that creates them.
    await server.run(build(settings))


def main() -> None:
    settings = Settings.from_env("molecule")
    configure_logging("molecule", settings.log_level)
    telemetry.configure_tracing("molecule", settings.data_dir, settings.otlp_endpoint)
    migrations.upgrade(settings.database_url, SCHEMA, MIGRATIONS)
    try:
        asyncio.run(serve(settings))
    finally:
        telemetry.shutdown_tracing()


if __name__ == "__main__":
    main()
