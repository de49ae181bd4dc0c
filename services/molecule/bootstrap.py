"""Composition root of the molecule service: builds every part once, typed, and nothing at import time.

`build_parts` makes the storage, the indexes, the use cases and the servicers over one engine (tests
use it to serve the real servicers); `build_server` declares the process services.runtime.process runs:
the servicers, the PredictionCompleted, SubmissionTransitioned and ResultsAccepted subscriptions, the outbox, and two
supervised jobs — the query index's and the search index's followers of MoleculesChanged. Those two are
not durable subscriptions on purpose: every replica must see every change (each has its own ordered
consumer from "now"; what came before, its load reads), where a durable consumer would hand each change
to one replica only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from molbridge.events.v1.cro_pb2 import ResultsAccepted, SubmissionTransitioned
from molbridge.events.v1.prediction_pb2 import PredictionCompleted
from molbridge.molecule.v1 import (
    import_service_pb2_grpc,
    library_service_pb2_grpc,
    molecule_service_pb2_grpc,
    search_service_pb2_grpc,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from services.molecule.adapters.identity_organizations import IdentityOrganizationNames
from services.molecule.adapters.identity_users import IdentityUserDirectory
from services.molecule.index.columnar import QueryIndex
from services.molecule.index.matcher import StructureMatcher
from services.molecule.index.query_sync import follow_changes
from services.molecule.index.search_index import SearchIndex
from services.molecule.index.search_sync import SearchIndexSync
from services.molecule.server.imports import ImportServicer
from services.molecule.server.libraries import LibraryServicer
from services.molecule.server.molecules import MoleculeServicer
from services.molecule.server.search import SearchServicer
from services.molecule.service.experimental import DURABLE as EXPERIMENTAL_DURABLE
from services.molecule.service.experimental import RESULTS_SOURCE, ExperimentalValueConsumer
from services.molecule.service.import_jobs import ImportJobService
from services.molecule.service.libraries import LibraryService
from services.molecule.service.molecules import MoleculeService
from services.molecule.service.numbering import Numbering
from services.molecule.service.predictions import DURABLE as PREDICTIONS_DURABLE
from services.molecule.service.predictions import PREDICTIONS_SOURCE, PredictionConsumer
from services.molecule.service.search import SearchService
from services.molecule.service.submissions import DURABLE as SUBMISSIONS_DURABLE
from services.molecule.service.submissions import SUBMISSIONS_SOURCE, SubmissionStatusConsumer
from services.molecule.service.uploads import UploadService
from services.molecule.settings import MoleculeSettings
from services.molecule.store.tables import SCHEMA
from services.molecule.store.uow import molecule_transactions
from services.molecule.worker.chunks import IN_FLIGHT, ChunkWorker, RowPool, chunk_consumer
from services.runtime import telemetry
from services.runtime.identity_client import RemoteIdentity, remote_authenticator
from services.runtime.migrations import MigrationSpec
from services.runtime.process import Outbox, Process, Subscription
from services.runtime.revocation import revocation_feed
from services.runtime.storage import ObjectStorage, make_storage

Servicer = tuple[Callable[[Any, grpc.aio.Server], None], Any]
MIGRATIONS = MigrationSpec(SCHEMA, Path(__file__).parent / "migrations")
log = logging.getLogger("molbridge.molecule")


@dataclass(frozen=True)
class MoleculeParts:
    settings: MoleculeSettings
    storage: ObjectStorage
    query_index: QueryIndex
    search_index: SearchIndex
    search_sync: SearchIndexSync
    matcher: StructureMatcher
    molecules: MoleculeService
    libraries: LibraryService
    search: SearchService
    uploads: UploadService
    import_jobs: ImportJobService
    predictions: PredictionConsumer
    submissions: SubmissionStatusConsumer
    experimental: ExperimentalValueConsumer
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

    @property
    def subscriptions(self) -> list[Subscription[Any]]:
        return subscriptions(self.predictions, self.submissions, self.experimental)


def subscriptions(
    predictions: PredictionConsumer, submissions: SubmissionStatusConsumer, experimental: ExperimentalValueConsumer
) -> list[Subscription[Any]]:
    """PREDICTED values from the prediction service; molecule statuses and EXPERIMENTAL values (accepted
    results) from the CRO service."""
    return [
        Subscription(
            PredictionCompleted,
            durable=PREDICTIONS_DURABLE,
            handler=predictions.on_completed,
            source=PREDICTIONS_SOURCE,
        ),
        Subscription(
            SubmissionTransitioned,
            durable=SUBMISSIONS_DURABLE,
            handler=submissions.on_transitioned,
            source=SUBMISSIONS_SOURCE,
        ),
        Subscription(
            ResultsAccepted,
            durable=EXPERIMENTAL_DURABLE,
            handler=experimental.on_accepted,
            source=RESULTS_SOURCE,
        ),
    ]


def build_parts(settings: MoleculeSettings, engine: AsyncEngine) -> MoleculeParts:
    """Every part of the service over `engine`; call it inside the running event loop (gRPC channels
    bind to the loop that makes them)."""
    transactions = molecule_transactions(engine)
    storage = make_storage(settings)
    query_index = QueryIndex(engine)
    search_index = SearchIndex()
    search_sync = SearchIndexSync(engine, search_index, settings.nats_url, settings.stream_policy)
    # Substructure matching runs in worker processes killed at the budget, so no query holds the service.
    matcher = StructureMatcher(settings.matcher_limits)
    users = IdentityUserDirectory(settings.addr_of("identity"))  # grantees must be users of the organization
    uploads = UploadService(transactions, storage, settings.import_limits)
    organizations = IdentityOrganizationNames(settings.addr_of("identity"))  # default registration prefixes
    numbering = Numbering(transactions, organizations)
    return MoleculeParts(
        settings=settings,
        storage=storage,
        query_index=query_index,
        search_index=search_index,
        search_sync=search_sync,
        matcher=matcher,
        molecules=MoleculeService(transactions, query_index, numbering),
        libraries=LibraryService(transactions, users, query_index),
        search=SearchService(
            transactions,
            search_index,
            query_index,
            matcher=matcher,
            is_ready=search_sync.is_ready,
            budgets=settings.search_budgets,
        ),
        uploads=uploads,
        import_jobs=ImportJobService(
            transactions, storage, uploads, public_url=settings.public_url, limits=settings.import_limits,
            queue=settings.csv_queue, numbering=numbering,
            rows_per_chunk=settings.import_chunk_rows,
        ),
        predictions=PredictionConsumer(transactions),  # PREDICTED values from the prediction service
        submissions=SubmissionStatusConsumer(transactions),  # statuses that follow the submissions
        experimental=ExperimentalValueConsumer(transactions),  # EXPERIMENTAL values of accepted results
        on_stop=[users.close, matcher.close, organizations.close],
    )


def build_server(settings: MoleculeSettings) -> Process:
    engine = telemetry.traced_engine(settings.database_url, SCHEMA)
    parts = build_parts(settings, engine)
    identity = RemoteIdentity(settings.addr_of("identity"))

    async def follow_molecule_changes() -> None:
        await follow_changes(parts.query_index, settings.nats_url, settings.stream_policy)

    return Process(
        servicers=parts.servicers,
        authenticator=remote_authenticator(identity),
        subscriptions=parts.subscriptions,
        # Revoked tokens and API keys, from identity's PrincipalRevoked events (a feed per process).
        consumers=[revocation_feed(identity.revocations, "molecule")],
        outbox=Outbox(engine, SCHEMA),
        # The search index loads in the background: the service serves at once and answers UNAVAILABLE
        # for an organization until its molecules are loaded.
        jobs=[follow_molecule_changes, parts.search_sync.run],
        on_start=[parts.matcher.start],
        liveness=[parts.matcher.problem],  # a wedged structure matcher: NOT_SERVING
        on_stop=[*parts.on_stop, identity.close, engine.dispose],
    )


def build_worker(settings: MoleculeSettings) -> Process:
    """The CSV worker: chunks from the work queue on a process pool of RDKit workers; it also relays the
    schema's outbox (job ends, the commit pass), so imports finish even with no server running."""
    engine = telemetry.traced_engine(settings.database_url, SCHEMA, pool_size=IN_FLIGHT + 2)
    pool = RowPool(settings.csv_processes)
    worker = ChunkWorker(
        molecule_transactions(engine),
        make_storage(settings),
        pool,
        queue=settings.csv_queue,
        limits=settings.import_limits.csv,
    )

    async def warm_pool() -> None:
        await pool.warm()
        log.info("csv worker: %d chemistry processes, queue %s", pool.processes, worker.subject)

    async def close_pool() -> None:
        pool.close()

    return Process(
        consumers=[functools.partial(chunk_consumer, worker=worker, queue=settings.csv_queue)] * IN_FLIGHT,
        outbox=Outbox(engine, SCHEMA),
        on_start=[warm_pool],
        on_stop=[close_pool, engine.dispose],
    )

