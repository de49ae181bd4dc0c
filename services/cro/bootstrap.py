"""Composition root of the CRO service: typed settings, clients and use cases, built once.

`python -m services.cro` serves CatalogueService, SubmissionService, MessageService and ResultService
(WatchMessages fed by one SubmissionMessagePosted consumer per replica), relays the schema's outbox (audit,
submission, quote and result events, submission_packages and result_processing work items) and hides a
submission's structures when its NDA ends (DocumentStatusChanged). `python -m services.cro.worker`
(build_worker) builds the submission packages (the submission_packages queue) and validates results CSVs
(the result_processing queue). The molecule, document and prediction services are called over gRPC with
the caller's own credentials (MOLBRIDGE_MOLECULE_ADDR, MOLBRIDGE_DOCUMENT_ADDR, MOLBRIDGE_PREDICTION_ADDR).
`build_parts` makes every part over one engine, so tests serve the real servicers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from molbridge.cro.v1 import cro_service_pb2_grpc as pb_grpc
from molbridge.cro.v1 import result_service_pb2_grpc as result_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.cro import worker
from services.cro.server import CatalogueServicer, SubmissionServicer
from services.cro.server.messages import MessageServicer
from services.cro.server.results import ResultServicer
from services.cro.service.catalogue import CatalogueService
from services.cro.service.comparisons import ComparisonService, PredictionLookup
from services.cro.service.messages import DocumentLookup, MessageService, message_feed
from services.cro.service.packages import PackageBuilder
from services.cro.service.ports import DocumentRequirementsPort, MoleculeLookup, OrganizationNames
from services.cro.service.result_processing import ResultProcessor
from services.cro.service.results import ResultService
from services.cro.service.structures import NdaWatcher
from services.cro.service.submissions import SubmissionService
from services.cro.store import SCHEMA, CroTransactions, transactions
from services.runtime import telemetry
from services.runtime.document_client import DocumentClient
from services.runtime.feeds import Feed
from services.runtime.identity_client import RemoteIdentity, remote_authenticator
from services.runtime.migrations import MigrationSpec
from services.runtime.molecule_client import MoleculeClient
from services.runtime.prediction_client import PredictionClient
from services.runtime.process import Hook, Outbox, Process, Subscription
from services.runtime.revocation import revocation_feed
from services.runtime.settings import Settings
from services.runtime.storage import ObjectStorage, make_storage

MIGRATIONS = MigrationSpec(SCHEMA, Path(__file__).parent / "migrations")

Servicer = tuple[Callable[[Any, grpc.aio.Server], None], Any]


class CroSettings(Settings):
    """The CRO service's variables: what every process reads (S3_* for the package manifests)."""


@dataclass
class CroParts:
    settings: CroSettings
    uow: CroTransactions
    storage: ObjectStorage
    catalogue: CatalogueService
    submissions: SubmissionService
    messages: MessageService
    packages: PackageBuilder
    ndas: NdaWatcher
    results: ResultService
    result_processor: ResultProcessor
    comparisons: ComparisonService
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def servicers(self) -> list[Servicer]:
        return [
            (pb_grpc.add_CatalogueServiceServicer_to_server, CatalogueServicer(self.catalogue)),
            (pb_grpc.add_SubmissionServiceServicer_to_server, SubmissionServicer(self.submissions)),
            (pb_grpc.add_MessageServiceServicer_to_server, MessageServicer(self.messages)),
            (result_grpc.add_ResultServiceServicer_to_server, ResultServicer(self.results, self.comparisons)),
        ]

    @property
    def jobs(self) -> list[Hook]:
        return []

    @property
    def subscriptions(self) -> list[Subscription[Any]]:
        """The server's (NDAs that ended); the worker's are worker.package_subscriptions."""
        return worker.document_subscriptions(self.ndas)


def build_parts(
    settings: CroSettings,
    database: AsyncEngine,
    *,
    molecules: MoleculeLookup,
    documents: DocumentRequirementsPort,
    message_documents: DocumentLookup,
    predictions: PredictionLookup,
    names: OrganizationNames | None = None,
) -> CroParts:
    """Every part of the service over `database`; call it inside the running event loop."""
    uow = transactions(database)
    storage = make_storage(settings)
    submissions = SubmissionService(uow, molecules, documents, storage)
    return CroParts(
        settings=settings,
        uow=uow,
        storage=storage,
        catalogue=CatalogueService(uow, names),
        submissions=submissions,
        messages=MessageService(uow, message_documents, Feed()),
        packages=PackageBuilder(uow, storage, submissions.record),
        ndas=NdaWatcher(uow),
        results=ResultService(uow, storage, submissions.record),
        result_processor=ResultProcessor(uow, storage, submissions.record),
        comparisons=ComparisonService(uow, predictions),
    )


def build_server(settings: CroSettings) -> Process:
    database = telemetry.traced_engine(settings.database_url, SCHEMA)
    identity = RemoteIdentity(settings.addr_of("identity"))
    molecules = MoleculeClient(settings.addr_of("molecule"))
    documents = DocumentClient(settings.addr_of("document"))
    predictions = PredictionClient(settings.addr_of("prediction"))
    parts = build_parts(
        settings, database, molecules=molecules, documents=documents, message_documents=documents,
        predictions=predictions, names=identity,
    )
    return Process(
        servicers=parts.servicers,
        authenticator=remote_authenticator(identity),
        subscriptions=parts.subscriptions,
        outbox=Outbox(database, SCHEMA),
        consumers=[
            revocation_feed(identity.revocations, "cro"),  # revoked tokens refused at once
            message_feed(parts.messages.feed, "cro"),  # new messages to this replica's watchers
        ],
        jobs=parts.jobs,
        on_stop=[identity.close, molecules.close, documents.close, predictions.close, *parts.on_stop,
                 database.dispose],
    )


def build_worker(settings: CroSettings) -> Process:
    """The worker: the submission_packages and result_processing queues. It relays the schema's outbox too,
    so a built package's step or a processed result reaches the bus with no server running. It calls no
    other service (the clients the use cases are built with stay unused)."""
    database = telemetry.traced_engine(settings.database_url, SCHEMA)
    molecules = MoleculeClient(settings.addr_of("molecule"))
    documents = DocumentClient(settings.addr_of("document"))
    predictions = PredictionClient(settings.addr_of("prediction"))
    parts = build_parts(
        settings, database, molecules=molecules, documents=documents, message_documents=documents,
        predictions=predictions,
    )
    return Process(
        subscriptions=[
            *worker.package_subscriptions(parts.packages),
            *worker.result_subscriptions(parts.result_processor),
        ],
        outbox=Outbox(database, SCHEMA),
        on_stop=[molecules.close, documents.close, predictions.close, *parts.on_stop, database.dispose],
    )
