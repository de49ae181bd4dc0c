"""Signature use cases on real PostgreSQL, the real identity service over gRPC (signers re-authenticate),
the real PAdES seal, and the local DocuSign eSignature peer (tests/docusign_server.py) through the SDK."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from google.protobuf.message import Message
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.document_pb2 import (
    DocumentStatusChanged,
    SignatureFinished,
    SignatureRequested,
    SignatureSyncRequested,
)
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.identity.v1 import identity_service_pb2_grpc as identity_grpc
from pypdf import PdfReader

from services.document.adapters.signer_identities import IdentitySigners
from services.document.bootstrap import MIGRATIONS, DocumentParts, DocumentSettings, build_parts, docusign_settings
from services.document.domain.docusign_connect import connect_signature
from services.document.domain.signatures import SignerSpec
from services.document.domain.vocabulary import DocumentStatus, EnvelopeStatus, SignerStatus, VersionOrigin
from services.document.store import SCHEMA
from services.identity.bootstrap import MIGRATIONS as IDENTITY_MIGRATIONS
from services.identity.server import PUBLIC_METHODS, IdentityServicer
from services.identity.service import IdentityService
from services.identity.store import SCHEMA as IDENTITY_SCHEMA
from services.runtime.auth import Authenticator, Principal, TokenVerifier
from services.runtime.db import make_engine
from services.runtime.errors import (
    AuthenticationError,
    AuthorizationError,
    NotFoundError,
    PreconditionError,
    ValidationError,
)
from services.runtime.identity_client import RemoteIdentity
from services.runtime.process import Process, running
from services.runtime.settings import Settings
from stack.ports import free_port
from tests.docusign_server import DocuSignServer
from tests.integration.identity_world import started_identity
from tests.pdfs import blank_pdf

PASSWORD = "Signature-Tester-123!"
CONNECT_SECRET = "connect-secret-for-tests"


@dataclass(frozen=True)
class Actor:
    principal: Principal
    token: str
    name: str

    @property
    def id(self) -> str:
        return self.principal.subject

    @property
    def credentials(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


class World:
    def __init__(self, identity: IdentityService, parts: DocumentParts, plain: DocumentParts, engine, docusign):  # type: ignore[no-untyped-def]
        self.identity, self.parts, self.plain, self.engine, self.docusign = identity, parts, plain, engine, docusign
        self.verifier = TokenVerifier(identity.jwks)
        self.root: Actor

    @property
    def signatures(self):  # type: ignore[no-untyped-def]
        return self.parts.signatures

    async def login(self, email: str, name: str) -> Actor:
        session = await self.identity.login(email, PASSWORD)
        return Actor(await self.verifier.verify(session.access_token), session.access_token, name)

    async def organization(self, kind: str) -> Actor:
        """A new organization; returns its admin."""
        organization = await self.identity.create_organization(
            self.root.principal, f"Org {uuid.uuid4().hex[:8]}", kind, ""
        )
        return await self.user(organization.id, f"{kind.lower()}_admin")

    async def user(self, organization_id: str, role: str) -> Actor:
        email = f"u{uuid.uuid4().hex[:10]}@sign.test"
        name = f"Signer {uuid.uuid4().hex[:4]}"
        await self.identity.create_user(
            self.root.principal, email=email, full_name=name, password=PASSWORD, roles=[role],
            organization_id=organization_id, request_id="",
        )
        return await self.login(email, name)

    async def document(self, owner: Actor, *, submission_id: str = "", pdf: bytes | None = None,
                       filename: str = "nda.pdf") -> str:
        data = pdf if pdf is not None else blank_pdf()

        async def body() -> AsyncIterator[bytes]:
            yield data

        headers = {"x-document-type": "NON_DISCLOSURE_AGREEMENT", "x-document-title": "Mutual NDA",
                   "x-submission-id": submission_id, "content-disposition": f'attachment; filename="{filename}"'}
        document = await self.parts.documents.upload(owner.principal, "application/pdf", body(), headers=headers)
        return document.id

    async def events(self) -> list[Message]:
        """Every event in the document outbox, unpacked, oldest first."""
        kinds = (AuditRecorded, DocumentStatusChanged, SignatureRequested, SignatureFinished, SignatureSyncRequested)
        async with self.engine.connect() as connection:
            payloads = await connection.execute(sa.text(f"SELECT payload FROM {SCHEMA}.outbox ORDER BY created_at, id"))
            found: list[Message] = []
            for payload in payloads.scalars():
                envelope = EventEnvelope.FromString(payload)
                for kind in kinds:
                    if envelope.payload.Is(kind.DESCRIPTOR):
                        event = kind()
                        envelope.payload.Unpack(event)
                        found.append(event)
            return found


def document_settings(root: Path, name: str) -> DocumentSettings:
    return DocumentSettings.from_env("document", {
        "MOLBRIDGE_DATA_DIR": str(root / name), "MOLBRIDGE_SIGNING_KEY_DIR": str(root / "seal"),
    })


@pytest.fixture(scope="module")
async def world(postgres_server, tmp_path_factory) -> AsyncIterator[World]:  # type: ignore[no-untyped-def]
    url = postgres_server.create_database()
    IDENTITY_MIGRATIONS.upgrade(url)
    MIGRATIONS.upgrade(url)
    root = tmp_path_factory.mktemp("signatures")
    identity_engine, engine = make_engine(url, IDENTITY_SCHEMA), make_engine(url, SCHEMA)
    identity = await started_identity(identity_engine, root / "mail", "root@sign.test", PASSWORD)
    port = free_port()
    settings = Settings.from_env("identity", {"MOLBRIDGE_IDENTITY_ADDR": f"127.0.0.1:{port}"})
    process = Process(
        servicers=[(identity_grpc.add_IdentityServiceServicer_to_server, IdentityServicer(identity))],
        authenticator=Authenticator(TokenVerifier(identity.jwks), identity),
        public_methods=PUBLIC_METHODS,
    )
    remote = RemoteIdentity(f"127.0.0.1:{port}")
    docusign = DocuSignServer(root)
    docusign.configure_connect("http://127.0.0.1:9/unused", CONNECT_SECRET)  # callbacks are posted by the tests
    docusign.start()
    try:
        async with running("identity", process, settings):
            parts = build_parts(document_settings(root, "data"), engine, signers=IdentitySigners(remote),
                                docusign=docusign_settings(docusign.environ()))
            plain = build_parts(document_settings(root, "data"), engine, signers=IdentitySigners(remote))
            w = World(identity, parts, plain, engine, docusign)
            w.root = await w.login("root@sign.test", "root")
            yield w
    finally:
        docusign.stop()
        await remote.close()
        await identity_engine.dispose()
        await engine.dispose()
        postgres_server.drop_database(url.rsplit("/", 1)[1])


async def pharma_and_cro(world: World) -> tuple[Actor, Actor, Actor, str]:
    """A pharma admin, a pharma scientist of the same organization, a CRO admin, and a submission shared
    between them."""
    pharma_admin = await world.organization("PHARMA")
    scientist = await world.user(pharma_admin.principal.organization_id, "pharma_scientist")
    cro_admin = await world.organization("CRO")
    submission = f"sub-{uuid.uuid4().hex[:8]}"
    await world.parts.documents.share_submission(
        scientist.principal, submission, pharma_admin.principal.organization_id, cro_admin.principal.organization_id,
        shared=True,
    )
    return pharma_admin, scientist, cro_admin, submission


def two_signers(pharma_admin: Actor, cro_admin: Actor) -> list[SignerSpec]:
    return [SignerSpec(user_id=pharma_admin.id, routing_order=1),
            SignerSpec(organization_id=cro_admin.principal.organization_id, role="cro_admin", routing_order=2)]


async def test_two_signers_in_order_seal_the_document(world: World) -> None:
    pharma_admin, scientist, cro_admin, submission = await pharma_and_cro(world)
    document_id = await world.document(scientist, submission_id=submission)
    signatures = world.signatures
    before = len(await world.events())

    request = await signatures.request(scientist.principal, document_id, two_signers(pharma_admin, cro_admin),
                                       message="Please sign", idempotency_key="ask-1")
    assert request.status is EnvelopeStatus.SENT and request.version == 1
    again = await signatures.request(scientist.principal, document_id, two_signers(pharma_admin, cro_admin),
                                     idempotency_key="ask-1")
    assert again.id == request.id  # a retried request creates nothing
    document = await world.parts.documents.get(scientist.principal, document_id)
    assert document.status is DocumentStatus.PENDING_SIGNATURE

    with pytest.raises(PreconditionError) as early:  # the CRO's turn has not come
        await signatures.sign(cro_admin.principal, document_id, password=PASSWORD, mfa_code="", meaning="reviewed",
                              credentials=cro_admin.credentials)
    assert early.value.detail == "NOT_YOUR_TURN"
    with pytest.raises(AuthenticationError):
        await signatures.sign(pharma_admin.principal, document_id, password="Wrong-Password-1!", mfa_code="",
                              meaning="approved", credentials=pharma_admin.credentials)
    with pytest.raises(ValidationError):
        await signatures.sign(pharma_admin.principal, document_id, password=PASSWORD, mfa_code="",
                              meaning="witnessed", credentials=pharma_admin.credentials)
    assert (await signatures.status(scientist.principal, document_id)).status is EnvelopeStatus.SENT

    first = await signatures.sign(pharma_admin.principal, document_id, password=PASSWORD, mfa_code="",
                                  meaning="approved", credentials=pharma_admin.credentials)
    assert first.status is EnvelopeStatus.SIGNED
    signed = first.signers[0]
    assert (signed.status, signed.signed_by, signed.printed_name, signed.meaning) == (
        SignerStatus.SIGNED, pharma_admin.id, pharma_admin.name, "approved")
    assert signed.signed_sha256 == request.sha256 and signed.signed_at is not None
    assert first.signers[1].status is SignerStatus.SENT

    done = await signatures.sign(cro_admin.principal, document_id, password=PASSWORD, mfa_code="",
                                 meaning="reviewed", credentials=cro_admin.credentials)
    assert done.status is EnvelopeStatus.COMPLETED and done.signed_version == 2
    document = await world.parts.documents.get(scientist.principal, document_id)
    assert document.status is DocumentStatus.SIGNED and document.current_version == 2
    sealed = document.current
    assert (sealed.origin, sealed.signed, sealed.content_type) == (VersionOrigin.SIGNED, True, "application/pdf")
    pdf = await world.parts.storage.get_bytes(sealed.object_key)
    assert len(PdfReader(io.BytesIO(pdf)).pages) == 2  # the document and its signature page
    page = "".join(PdfReader(io.BytesIO(pdf)).pages[-1].extract_text().split())  # narrow table cells wrap words
    for printed in (pharma_admin.name, cro_admin.name, "approved", "reviewed", request.sha256):
        assert printed.replace(" ", "") in page

    verification = await signatures.verify(cro_admin.principal, document_id)
    assert verification.version == 2
    assert verification.check.intact and verification.check.trusted and verification.check.covers_whole_document

    requirements = await world.parts.documents.requirements(scientist.principal, submission, "BINDING_ASSAY")
    nda = next(r for r in requirements.requirements if r.document_type.value == "NON_DISCLOSURE_AGREEMENT")
    assert nda.signed_by_owner and nda.signed_by_counterparty and nda.satisfied

    with pytest.raises(PreconditionError):
        await world.parts.documents.delete(scientist.principal, document_id)

    events = (await world.events())[before:]
    audits = [(e.action, e.details.get("meaning", "")) for e in events if isinstance(e, AuditRecorded)
              and e.action.startswith("signature.") and e.target_id == document_id]
    assert audits == [("signature.requested", ""), ("signature.signed", "approved"),
                      ("signature.signed", "reviewed"), ("signature.completed", "")]
    turns = [(e.signer_user_id, e.signer_organization_id) for e in events if isinstance(e, SignatureRequested)]
    assert turns == [(pharma_admin.id, ""), ("", cro_admin.principal.organization_id)]
    moves = [(e.from_status, e.to_status) for e in events
             if isinstance(e, DocumentStatusChanged) and e.document_id == document_id]
    assert moves == [("DRAFT", "PENDING_SIGNATURE"), ("PENDING_SIGNATURE", "SIGNED")]
    finished = [e.status for e in events if isinstance(e, SignatureFinished)]
    assert finished == ["COMPLETED"]


async def test_decline_rejects_the_document_and_void_puts_it_back_to_draft(world: World) -> None:
    pharma_admin, scientist, cro_admin, submission = await pharma_and_cro(world)
    document_id = await world.document(scientist, submission_id=submission)
    signatures = world.signatures
    specs = two_signers(pharma_admin, cro_admin)

    await signatures.request(scientist.principal, document_id, specs)
    with pytest.raises(PreconditionError) as second:
        await world.plain.signatures.request(scientist.principal, document_id, specs)
    assert second.value.detail in ("DOCUMENT_STATE", "REQUEST_OPEN")
    with pytest.raises(AuthorizationError):  # not the requester, not an admin
        other = await world.user(scientist.principal.organization_id, "pharma_scientist")
        await signatures.void(other.principal, document_id, "not mine")
    declined = await signatures.decline(pharma_admin.principal, document_id, "wrong counterparty")
    assert declined.status is EnvelopeStatus.DECLINED
    assert declined.signers[0].decline_reason == "wrong counterparty"
    assert (await world.parts.documents.get(scientist.principal, document_id)).status is DocumentStatus.REJECTED

    await signatures.request(scientist.principal, document_id, specs)
    voided = await signatures.void(pharma_admin.principal, document_id, "superseded")  # an admin of the owner
    assert voided.status is EnvelopeStatus.VOIDED
    assert (await world.parts.documents.get(scientist.principal, document_id)).status is DocumentStatus.DRAFT
    with pytest.raises(PreconditionError):
        await signatures.void(scientist.principal, document_id, "again")


async def test_refusals_at_request_time(world: World) -> None:
    pharma_admin, scientist, cro_admin, submission = await pharma_and_cro(world)
    text_id = await world.document(scientist, pdf=b"plain text, not a PDF\n" * 10, filename="nda.txt")
    with pytest.raises(ValidationError) as not_pdf:
        await world.signatures.request(scientist.principal, text_id, two_signers(pharma_admin, cro_admin))
    assert not_pdf.value.detail == "NOT_A_PDF"
    pdf_id = await world.document(scientist, submission_id=submission)
    with pytest.raises(ValidationError) as unconfigured:
        await world.plain.signatures.request(
            scientist.principal, pdf_id, [SignerSpec(name="A", email="a@x.test")], provider="docusign")
    assert "DocuSign is not configured" in unconfigured.value.message
    with pytest.raises(AuthorizationError):  # the CRO reads the document but does not ask for signatures
        await world.signatures.request(cro_admin.principal, pdf_id, two_signers(pharma_admin, cro_admin))


async def test_another_organization_sees_no_signature(world: World) -> None:
    pharma_admin, scientist, cro_admin, submission = await pharma_and_cro(world)
    document_id = await world.document(scientist, submission_id=submission)
    await world.signatures.request(scientist.principal, document_id, two_signers(pharma_admin, cro_admin))
    stranger = await world.organization("PHARMA")
    calls = [
        world.signatures.status(stranger.principal, document_id),
        world.signatures.request(stranger.principal, document_id, [SignerSpec(user_id=stranger.id)]),
        world.signatures.sign(stranger.principal, document_id, password=PASSWORD, mfa_code="", meaning="approved",
                              credentials=stranger.credentials),
        world.signatures.decline(stranger.principal, document_id, "no"),
        world.signatures.void(stranger.principal, document_id, "no"),
        world.signatures.verify(stranger.principal, document_id),
        world.signatures.signing_url(stranger.principal, document_id, "https://app.test/back"),
    ]
    for call in calls:
        with pytest.raises(NotFoundError):
            await call


async def test_docusign_envelope_connect_and_sync(world: World) -> None:
    pharma_admin, scientist, cro_admin, submission = await pharma_and_cro(world)
    document_id = await world.document(scientist, submission_id=submission, pdf=blank_pdf(2))
    specs = [
        SignerSpec(user_id=pharma_admin.id, organization_id=pharma_admin.principal.organization_id,
                   name="Paula Pharma", email="paula@pharma.test", routing_order=1),
        SignerSpec(organization_id=cro_admin.principal.organization_id, name="Carl Cro", email="carl@cro.test",
                   routing_order=2),
    ]
    signatures = world.signatures
    request = await signatures.request(scientist.principal, document_id, specs, provider="docusign")
    assert request.envelope_id and request.envelope_id in world.docusign.envelopes

    url = await signatures.signing_url(pharma_admin.principal, document_id, "https://app.test/back")
    assert url.startswith("https://")
    with pytest.raises(ValidationError):
        await signatures.signing_url(pharma_admin.principal, document_id, "http://app.test/back")
    with pytest.raises(PreconditionError):  # built-in signing of a DocuSign request
        await signatures.sign(pharma_admin.principal, document_id, password=PASSWORD, mfa_code="",
                              meaning="approved", credentials=pharma_admin.credentials)

    def signed(body: bytes, secret: str = CONNECT_SECRET) -> dict[str, str]:
        return {"x-docusign-signature-1": connect_signature(body, secret), "content-type": "application/json"}

    world.docusign.complete(request.envelope_id)  # both recipients sign at DocuSign
    body = world.docusign.connect_message(request.envelope_id, "envelope-completed")
    with pytest.raises(AuthenticationError):
        await signatures.receive_webhook(body, signed(body, "forged"))
    with pytest.raises(AuthenticationError):
        await signatures.receive_webhook(body, {})
    assert await signatures.receive_webhook(body, signed(body)) is True
    assert await signatures.receive_webhook(body, signed(body)) is False  # replayed
    syncs = [e for e in await world.events() if isinstance(e, SignatureSyncRequested) and e.request_id == request.id]
    assert [s.trigger for s in syncs] == ["envelope-completed"]

    assert await signatures.sync(request.id) is True
    assert await signatures.sync(request.id) is True  # redelivered: nothing more
    document = await world.parts.documents.get(scientist.principal, document_id)
    assert document.status is DocumentStatus.SIGNED and document.current_version == 2
    assert (document.current.origin, document.current.signed) == (VersionOrigin.DOCUSIGN, True)
    status = await signatures.status(cro_admin.principal, document_id)
    assert status.status is EnvelopeStatus.COMPLETED and status.signed_version == 2
    assert [s.status for s in status.signers] == [SignerStatus.SIGNED, SignerStatus.SIGNED]
    requirements = await world.parts.documents.requirements(scientist.principal, submission, "BINDING_ASSAY")
    nda = next(r for r in requirements.requirements if r.document_type.value == "NON_DISCLOSURE_AGREEMENT")
    assert nda.signed_by_owner and nda.signed_by_counterparty


async def test_voiding_a_docusign_request_voids_the_envelope(world: World) -> None:
    pharma_admin, scientist, cro_admin, submission = await pharma_and_cro(world)
    document_id = await world.document(scientist, submission_id=submission)
    request = await world.signatures.request(
        scientist.principal, document_id, [SignerSpec(name="Paula", email="paula@pharma.test")], provider="docusign")
    await world.signatures.void(scientist.principal, document_id, "wrong file")
    assert world.docusign.envelopes[request.envelope_id].status == "voided"
    assert (await world.parts.documents.get(scientist.principal, document_id)).status is DocumentStatus.DRAFT
