"""`python -m services.molecule`: serves MoleculeService, SearchService, ImportService and LibraryService
(built by bootstrap.py); CSV chunks are processed by `python -m services.molecule.worker` processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.molecule.bootstrap import build_server
from services.molecule.store.tables import SCHEMA
from services.runtime import migrations, server, telemetry
from services.runtime.logs import configure_logging
from services.runtime.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


async def serve(settings: Settings) -> None:
    # Built inside the running loop: gRPC aio channels and engines bind to the loop that creates them.
    await server.run(build_server(settings))


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
