"""Composition root of the document service: typed settings, adapters and use cases, built once.

`python -m services.document` serves DocumentService and SignatureService, relays the schema's outbox
(audit, status and signature events, signature_sync work items), consumes its own signature_sync queue
(services/document/worker.py: DocuSign envelope sync) and the CRO's SubmissionTransitioned (documents
shared with the CRO at SUBMITTED) and runs the expiry sweep as a supervised job
(every replica may run it: the sweep skips rows another holds).

Signatures: the platform seal key lives in MOLBRIDGE_SIGNING_KEY_DIR (default <data dir>/document-seal,
created on first start); DocuSign is used only when DOCUSIGN_BASE_PATH is set (then every DOCUSIGN_*
variable is checked at start, see adapters/docusign.py) — otherwise a "docusign" request answers
VALIDATION_ERROR "DocuSign is not configured". `build_parts` makes every part over one engine, so tests
serve the real servicers.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from molbridge.document.v1 import document_service_pb2_grpc as pb_grpc
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncEngine

from services.document import worker
from services.document.adapters.docusign import DocuSignProvider, DocuSignSettings
from services.document.adapters.seal import PadesSealer, PlatformKey
from services.document.adapters.signer_identities import IdentitySigners
from services.document.adapters.templates import JinjaTemplates
from services.document.server import DocumentServicer
from services.document.server.signatures import PUBLIC_METHODS, SignatureServicer
from services.document.service.documents import (
    DEFAULT_LINK_SECONDS,
    DEFAULT_MAX_BYTES,
    DocumentLimits,
    DocumentService,
)
from services.document.service.ports import SignerIdentities, TemplateRenderer
from services.document.service.signatures import SignatureService
from services.document.store import SCHEMA, DocumentTransactions, transactions
from services.runtime import telemetry
from services.runtime.identity_client import RemoteIdentity, remote_authenticator
from services.runtime.migrations import MigrationSpec
from services.runtime.process import Hook, Outbox, Process, Subscription
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

    signing_key_dir_override: Path | None = Field(None, validation_alias="MOLBRIDGE_SIGNING_KEY_DIR")

    def limits(self) -> DocumentLimits:
        return DocumentLimits(max_bytes=self.max_bytes, link_seconds=self.link_s)

    @property
    def signing_key_dir(self) -> Path:
        """Where the platform's seal key and certificate live (created on first use)."""
        return self.signing_key_dir_override or self.data_dir / "document-seal"


def docusign_settings(environ: Mapping[str, str]) -> DocuSignSettings | None:
    """DocuSign's settings when DOCUSIGN_BASE_PATH is set (SettingsError names what else is missing)."""
    return DocuSignSettings.from_environ(environ) if environ.get("DOCUSIGN_BASE_PATH", "").strip() else None


@dataclass
class DocumentParts:
    settings: DocumentSettings
    uow: DocumentTransactions
    storage: ObjectStorage
    documents: DocumentService
    signatures: SignatureService
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def servicers(self) -> list[Servicer]:
        return [
            (pb_grpc.add_DocumentServiceServicer_to_server, DocumentServicer(self.documents)),
            (pb_grpc.add_SignatureServiceServicer_to_server, SignatureServicer(self.signatures)),
        ]

    @property
    def subscriptions(self) -> list[Subscription[Any]]:
        return worker.subscriptions(self.signatures, self.documents)

    @property
    def jobs(self) -> list[Hook]:
        async def sweep() -> None:
            await self.documents.sweep_expired_forever(self.settings.expiry_sweep_s)

        return [sweep]


def build_parts(
    settings: DocumentSettings,
    database: AsyncEngine,
    *,
    signers: SignerIdentities | None = None,
    templates: TemplateRenderer | None = None,
    docusign: DocuSignSettings | None = None,
) -> DocumentParts:
    """Every part of the service over `database`; call it inside the running event loop. `signers`
    re-authenticates built-in signers (identity over gRPC; None: built-in signing answers
    INTEGRATION_ERROR); `docusign` None: DocuSign is not configured."""
    uow = transactions(database)
    storage = make_storage(settings)
    templates = templates or JinjaTemplates()  # the template files of the repository
    documents = DocumentService(
        uow, storage, limits=settings.limits(), public_url=settings.public_url, templates=templates
    )
    signatures = SignatureService(
        uow, documents, signers, PadesSealer(PlatformKey.load_or_create(settings.signing_key_dir)),
        provider=DocuSignProvider(docusign) if docusign else None,
        connect_secrets=docusign.connect_secrets if docusign else (),
    )
    return DocumentParts(settings=settings, uow=uow, storage=storage, documents=documents, signatures=signatures)


def build_server(settings: DocumentSettings) -> Process:
    database = telemetry.traced_engine(settings.database_url, SCHEMA)
    identity = RemoteIdentity(settings.addr_of("identity"))
    parts = build_parts(settings, database, signers=IdentitySigners(identity), docusign=docusign_settings(os.environ))
    return Process(
        servicers=parts.servicers,
        authenticator=remote_authenticator(identity),
        public_methods=PUBLIC_METHODS,
        subscriptions=parts.subscriptions,
        outbox=Outbox(database, SCHEMA),
        consumers=[revocation_feed(identity.revocations, "document")],  # revoked tokens refused at once
        jobs=parts.jobs,
        on_stop=[identity.close, *parts.on_stop, database.dispose],
    )
