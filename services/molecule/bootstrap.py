"""Composition root of the molecule service: builds every part once, typed, and nothing at import time.

`build_parts` makes the storage, the indexes, the use cases and the servicers over one engine (tests
use it to serve the real servicers); `build_server` adds what the process runs beside them: the
outbox relay with the PredictionCompleted consumer, the query index's and the search index's bus
followers (each preloads every organization), and their stops.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from molbridge.molecule.v1 import (
    import_service_pb2_grpc,
    library_service_pb2_grpc,
    molecule_service_pb2_grpc,
    search_service_pb2_grpc,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from bus.runner import run_bus
from services.molecule.adapters.identity_users import IdentityUserDirectory
from services.molecule.index.columnar import QueryIndex
from services.molecule.index.query_sync import follow_changes
from services.molecule.index.search_index import SearchIndex
from services.molecule.index.search_sync import SearchIndexSync
from services.molecule.server.imports import ImportServicer
from services.molecule.server.libraries import LibraryServicer
from services.molecule.server.molecules import MoleculeServicer
from services.molecule.server.search import SearchServicer
from services.molecule.service.import_jobs import ImportJobService
from services.molecule.service.libraries import LibraryService
from services.molecule.service.molecules import MoleculeService
from services.molecule.service.predictions import PredictionConsumer
from services.molecule.service.search import SearchService
from services.molecule.service.uploads import UploadService
from services.molecule.settings import MoleculeSettings
from services.molecule.store.tables import SCHEMA
from services.molecule.store.uow import molecule_transactions
from services.runtime import server, telemetry
from services.runtime.db import UnitOfWork, make_engine
from services.runtime.identity_client import RemoteIdentity, remote_authenticator
from services.runtime.settings import Settings
from services.runtime.storage import ObjectStorage, make_storage

Servicer = tuple[Callable[[Any, grpc.aio.Server], None], Any]


@dataclass(frozen=True)
class MoleculeParts:
    settings: MoleculeSettings
    storage: ObjectStorage
    query_index: QueryIndex
    search_index: SearchIndex
    search_sync: SearchIndexSync
    molecules: MoleculeService
    libraries: LibraryService
    search: SearchService
    uploads: UploadService
    import_jobs: ImportJobService
    predictions: PredictionConsumer
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def servicers(self) -> list[Servicer]:
        return [
            (molecule_service_pb2_grpc.add_MoleculeServiceServicer_to_server, MoleculeServicer(self.molecules)),
            (library_service_pb2_grpc.add_LibraryServiceServicer_to_server, LibraryServicer(self.libraries)),
            (search_service_pb2_grpc.add_SearchServiceServicer_to_server, SearchServicer(self.search)),
            (
                import_service_pb2_grpc.add_ImportServiceServicer_to_server,
                ImportServicer(self.uploads, self.import_jobs),
            ),
        ]


def build_parts(settings: Settings, engine: AsyncEngine) -> MoleculeParts:
    """Every part of the service over `engine`; call it inside the running event loop (gRPC channels
    bind to the loop that makes them)."""
    config = MoleculeSettings.from_settings(settings)
    transactions = molecule_transactions(engine)
    storage = make_storage(settings)
    query_index = QueryIndex(engine)
    search_index = SearchIndex()
    search_sync = SearchIndexSync(engine, search_index, settings.nats_url)
    users = IdentityUserDirectory(settings.addr_of("identity"))  # grantees must be users of the organization
    uploads = UploadService(transactions, storage, config.import_limits)
    return MoleculeParts(
        settings=config,
        storage=storage,
        query_index=query_index,
        search_index=search_index,
        search_sync=search_sync,
        molecules=MoleculeService(transactions, query_index),
        libraries=LibraryService(transactions, users, query_index),
        # Search reads through a plain session (its SQL is still inline; see service/search.py).
        search=SearchService(
            UnitOfWork(engine), search_index, query_index, is_ready=search_sync.is_ready, budgets=config.search_budgets
        ),
        uploads=uploads,
        import_jobs=ImportJobService(
            transactions, storage, uploads, public_url=config.public_url, limits=config.import_limits,
            queue=config.csv_queue,
        ),
        predictions=PredictionConsumer(transactions),  # PREDICTED values from the prediction service
        on_stop=[users.close],
    )


def build_server(settings: Settings) -> server.ServiceApp:
    engine = make_engine(settings.database_url, SCHEMA)
    telemetry.instrument_engine(engine)
    parts = build_parts(settings, engine)
    identity = RemoteIdentity(settings.addr_of("identity"))

    async def publish_outbox() -> None:
        await run_bus(
            settings.nats_url, name="molecule", engine=engine, schema=SCHEMA, consumers=[parts.predictions.consumer]
        )

    async def follow_molecule_changes() -> None:
        await follow_changes(parts.query_index, settings.nats_url)

    return server.ServiceApp(
        settings=settings,
        servicers=parts.servicers,
        authenticator=remote_authenticator(identity),
        # The search index loads in the background: the service serves at once and answers UNAVAILABLE
        # for an organization until its molecules are loaded.
        background=[publish_outbox, follow_molecule_changes, parts.search_sync.run],
        on_stop=[*parts.on_stop, identity.close, engine.dispose],
    )
