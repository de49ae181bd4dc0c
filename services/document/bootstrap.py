"""Composition root of the document service: typed settings, adapters and use cases, built once.

`python -m services.document` serves DocumentService, relays the schema's outbox (audit and status
events) and runs the expiry sweep as a supervised job (every replica may run it: the sweep skips rows
another holds). `build_parts` makes every part over one engine, so tests serve the real servicers; a
new servicer of the service (e.g. SignatureService) is one more entry in `DocumentParts.servicers`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from molbridge.document.v1 import document_service_pb2_grpc as pb_grpc
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncEngine

from services.document.server import DocumentServicer
from services.document.service.documents import (
    DEFAULT_LINK_SECONDS,
    DEFAULT_MAX_BYTES,
    DocumentLimits,
    DocumentService,
)
from services.document.service.ports import TemplateRenderer
from services.document.store import SCHEMA, DocumentTransactions, transactions
from services.runtime import telemetry
from services.runtime.identity_client import RemoteIdentity, remote_authenticator
from services.runtime.migrations import MigrationSpec
from services.runtime.process import Hook, Outbox, Process
from services.runtime.revocation import revocation_feed
from services.runtime.settings import Settings
from services.runtime.storage import ObjectStorage, make_storage

MIGRATIONS = MigrationSpec(SCHEMA, Path(__file__).parent / "migrations")

Servicer = tuple[Callable[[Any, grpc.aio.Server], None], Any]


class DocumentSettings(Settings):
    """The document service's variables, on top of what every process reads (S3_* for storage)."""

    max_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1, validation_alias="MOLBRIDGE_DOCUMENT_MAX_BYTES")
    expiry_sweep_s: float = Field(3600.0, gt=0, validation_alias="MOLBRIDGE_DOCUMENT_EXPIRY_SWEEP_S")
    link_s: int = Field(DEFAULT_LINK_SECONDS, ge=1, le=7 * 24 * 3600, validation_alias="MOLBRIDGE_DOCUMENT_LINK_S")

    def limits(self) -> DocumentLimits:
        return DocumentLimits(max_bytes=self.max_bytes, link_seconds=self.link_s)


@dataclass
class DocumentParts:
    settings: DocumentSettings
    uow: DocumentTransactions
    storage: ObjectStorage
    documents: DocumentService
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def servicers(self) -> list[Servicer]:
        return [(pb_grpc.add_DocumentServiceServicer_to_server, DocumentServicer(self.documents))]

    @property
    def jobs(self) -> list[Hook]:
        async def sweep() -> None:
            await self.documents.sweep_expired_forever(self.settings.expiry_sweep_s)

        return [sweep]


def build_parts(
    settings: DocumentSettings, database: AsyncEngine, *, templates: TemplateRenderer | None = None
) -> DocumentParts:
    """Every part of the service over `database`; call it inside the running event loop."""
    uow = transactions(database)
    storage = make_storage(settings)
    documents = DocumentService(
        uow, storage, limits=settings.limits(), public_url=settings.public_url, templates=templates
    )
    return DocumentParts(settings=settings, uow=uow, storage=storage, documents=documents)


def build_server(settings: DocumentSettings) -> Process:
    database = telemetry.traced_engine(settings.database_url, SCHEMA)
    identity = RemoteIdentity(settings.addr_of("identity"))
    parts = build_parts(settings, database)
    return Process(
        servicers=parts.servicers,
        authenticator=remote_authenticator(identity),
        outbox=Outbox(database, SCHEMA),
        consumers=[revocation_feed(identity.revocations, "document")],  # revoked tokens refused at once
        jobs=parts.jobs,
        on_stop=[identity.close, *parts.on_stop, database.dispose],
    )
