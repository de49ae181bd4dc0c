"""Signature use cases (SignatureService): ask for signatures, sign built in, decline, void, DocuSign's
embedded signing and Connect callbacks, and the check of a sealed PDF.

Decisions
- Any document type may be sent for signature (MTA, NDA and service agreement must be; an experiment
  specification may be, too); only a DRAFT PDF, by a member of the owning organization who may request
  signatures. A non-PDF is refused at request time: the signed copy carries a signature page and a PDF
  signature, which only a PDF can.
- Built in: the signer re-authenticates with identity (password, MFA code when enrolled) before the
  transaction; the record keeps printed name, time, meaning and the SHA-256 of the version signed.
  The last signature seals the PDF (signature page + PAdES by the platform key, in a thread) into a new
  immutable version "signed", and the document is SIGNED — all in the transaction of the signature.
- DocuSign: the envelope is created (and voided) inside the transaction of the change, so a refusal
  leaves nothing behind. A Connect callback is verified (HMAC against every configured secret), kept
  once by its event key and turned into a SignatureSyncRequested work item; the worker (`sync`) reads
  the envelope from DocuSign — the callback's own content is never trusted beyond "look again" — and on
  completion stores the completed document as a new version "docusign", exactly once (the request row
  is locked and its signed version set in the same transaction).
Every change records its events (SignatureRequested for each signer whose turn came, SignatureFinished,
DocumentStatusChanged) and an AuditRecorded in the same transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from google.protobuf.message import Message
from molbridge.events.v1.document_pb2 import (
    SignatureFinished,
    SignatureRequested,
    SignatureSyncRequested,
)

from services.document.domain.documents import Document, StatusChange, StoredFile
from services.document.domain.docusign_connect import parse_connect_event, verify_connect_signature
from services.document.domain.signatures import (
    DocumentFacts,
    DocumentStatusMoved,
    Event,
    Person,
    RequestFinished,
    SignatureRequest,
    SignerDeclined,
    SignerSigned,
    SignerSpec,
    SignerTurn,
    new_request,
    parse_provider,
)
from services.document.domain.vocabulary import (
    SIGNATURE_REQUESTERS,
    DocumentStatus,
    EnvelopeStatus,
    Provider,
    VersionOrigin,
)
from services.document.service.documents import DocumentService, record_audit, record_status_change
from services.document.service.ports import (
    EnvelopeRecipient,
    SealCheck,
    Sealer,
    SignatureLine,
    SignatureProvider,
    SignerIdentities,
)
from services.document.store.uow import DocumentTransactions, DocumentUnitOfWork
from services.runtime.auth import Principal
from services.runtime.context import client_address_var, request_id_var
from services.runtime.errors import (
    AuthenticationError,
    AuthorizationError,
    IntegrationError,
    NotFoundError,
    PreconditionError,
    ValidationError,
)
from services.runtime.idempotency import MAX_REQUEST_ID_LENGTH
from services.runtime.protomap import timestamp

log = logging.getLogger("molbridge.document.signatures")

SYNC_QUEUE = "signature_sync"  # the WORK stream's queue of SignatureSyncRequested items
PDF = "application/pdf"
DOCUSIGN_ACTOR = "docusign"  # who added a DocuSign-completed version
MAX_RETURN_URL = 2000


def utcnow() -> datetime:
    return datetime.now(UTC)


def person(principal: Principal) -> Person:
    return Person(principal.subject, principal.organization_id, principal.roles)


@dataclass(frozen=True)
class Verification:
    version: int
    check: SealCheck


class SignatureService:
    def __init__(
        self,
        uow: DocumentTransactions,
        documents: DocumentService,
        signers: SignerIdentities | None,
        sealer: Sealer,
        provider: SignatureProvider | None = None,
        connect_secrets: Sequence[str] = (),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._uow = uow
        self._documents = documents  # stores the files this service makes
        self._storage = documents.storage
        self._signers = signers
        self._sealer = sealer
        self._provider = provider
        self._connect_secrets = tuple(s for s in connect_secrets if s)
        self._clock = clock

    # -- asking ------------------------------------------------------------------------------------------
    async def request(
        self,
        principal: Principal,
        document_id: str,
        specs: Sequence[SignerSpec],
        *,
        provider: str = "",
        message: str = "",
        idempotency_key: str = "",
    ) -> SignatureRequest:
        principal.require_any_role(*SIGNATURE_REQUESTERS)
        chosen = parse_provider(provider)
        docusign = self._docusign() if chosen is Provider.DOCUSIGN else None
        if len(idempotency_key) > MAX_REQUEST_ID_LENGTH:
            raise ValidationError(
                "request_id is too long", field_violations=[("request_id", f"at most {MAX_REQUEST_ID_LENGTH} chars")]
            )
        async with self._uow() as uow:
            document = await uow.documents.get(principal, document_id, lock=True)
            if not principal.can_see_organization(document.organization_id):
                raise AuthorizationError(
                    "Only the owning organization asks for signatures on its documents", detail="NOT_OWNER"
                )
            if idempotency_key:
                earlier = await uow.signatures.by_idempotency_key(document.id, idempotency_key)
                if earlier is not None:
                    return earlier
            current = document.current
            facts = DocumentFacts(
                id=document.id, organization_id=document.organization_id, submission_id=document.submission_id,
                title=document.title, status=document.status, version=current.version, sha256=current.sha256,
                content_type=current.content_type,
            )
            request = new_request(
                facts, specs, provider=chosen, requested_by=principal.subject, at=self._clock(), message=message
            )
            events = request.send()
            if docusign is not None:
                pdf = await self._verified_bytes(document, request.version)
                request.envelope_id = await docusign.create_envelope(
                    pdf=pdf, filename=current.filename, subject=f"Please sign: {document.title}"[:100],
                    message=message, recipients=[_recipient(s.position, s.spec) for s in request.signers],
                )
            await uow.signatures.add(request, idempotency_key)
            record_audit(uow, "signature.requested", document, principal, {
                "signature_request_id": request.id, "provider": request.provider.value, "version": str(request.version),
                "sha256": request.sha256, "signers": str(len(request.signers)),
            })
            await self._apply(uow, document, request, events, principal.subject)
        return request

    async def status(self, principal: Principal, document_id: str) -> SignatureRequest:
        async with self._uow() as uow:
            document = await uow.documents.get(principal, document_id)
            return await self._latest(uow, document)

    # -- built-in signing ----------------------------------------------------------------------------------
    async def sign(
        self,
        principal: Principal,
        document_id: str,
        *,
        password: str,
        mfa_code: str,
        meaning: str,
        credentials: Mapping[str, str],
    ) -> SignatureRequest:
        # Refusals that need no password first: a refused request must not cost a lockout attempt.
        async with self._uow() as uow:
            document = await uow.documents.get(principal, document_id)
            (await self._latest(uow, document)).check_signature(person(principal), meaning, document.current.sha256)
        if not password:
            raise ValidationError("Your password is required to sign", field_violations=[("password", "required")])
        if self._signers is None:
            raise IntegrationError("Signing needs the identity service, which this process does not reach")
        confirmed = await self._signers.confirm_signer(credentials, password, mfa_code)
        signer = Person(
            confirmed.user_id, confirmed.organization_id, confirmed.roles, confirmed.printed_name, confirmed.email
        )
        async with self._uow() as uow:
            document = await uow.documents.get(principal, document_id, lock=True)
            request = await self._latest(uow, document, lock=True)
            events = request.sign(signer, meaning, document.current.sha256, self._clock())
            sealed = await self._seal(document, request) if request.status is EnvelopeStatus.COMPLETED else None
            await self._apply(uow, document, request, events, principal.subject, completed=sealed)
        return request

    async def decline(self, principal: Principal, document_id: str, reason: str) -> SignatureRequest:
        async with self._uow() as uow:
            document = await uow.documents.get(principal, document_id, lock=True)
            request = await self._latest(uow, document, lock=True)
            events = request.decline(person(principal), reason, self._clock())
            await self._apply(uow, document, request, events, principal.subject)
        return request

    async def void(self, principal: Principal, document_id: str, reason: str) -> SignatureRequest:
        async with self._uow() as uow:
            document = await uow.documents.get(principal, document_id, lock=True)
            request = await self._latest(uow, document, lock=True)
            events = request.void(person(principal), reason, self._clock())
            if request.provider is Provider.DOCUSIGN and request.envelope_id:
                await self._docusign().void(request.envelope_id, reason.strip())
            await self._apply(uow, document, request, events, principal.subject, reason=reason.strip())
        return request

    async def verify(self, principal: Principal, document_id: str, version: int = 0) -> Verification:
        async with self._uow() as uow:
            document = await uow.documents.get(principal, document_id)
        if version:
            chosen = document.version(version)
            if not chosen.signed:
                raise PreconditionError(f"version {version} is not a signed version", detail="NOT_SIGNED")
        else:
            signed = [v for v in document.versions if v.signed]
            if not signed:
                raise NotFoundError("the document has no signed version", detail="NOT_SIGNED")
            chosen = signed[-1]
        pdf = await self._storage.get_bytes(chosen.object_key)
        return Verification(chosen.version, await asyncio.to_thread(self._sealer.verify, pdf))

    # -- DocuSign ------------------------------------------------------------------------------------------
    async def signing_url(self, principal: Principal, document_id: str, return_url: str) -> str:
        _check_return_url(return_url)
        async with self._uow() as uow:
            document = await uow.documents.get(principal, document_id)
            request = await self._latest(uow, document)
        if request.provider is not Provider.DOCUSIGN:
            raise PreconditionError("This request is signed built in: sign it here", detail="SIGNED_HERE")
        slot = request.turn_of(person(principal))
        if slot.spec.user_id != principal.subject:
            raise PreconditionError(
                "You sign this request from DocuSign's email, not embedded here", detail="NOT_EMBEDDED"
            )
        return await self._docusign().signing_url(request.envelope_id, _recipient(slot.position, slot.spec), return_url)

    async def receive_webhook(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """A Connect callback; True when it was new (a replay answers False and changes nothing)."""
        if not verify_connect_signature(body, headers, self._connect_secrets):
            log.warning(
                "DocuSign Connect call refused: no valid X-DocuSign-Signature (%d bytes, from %s, request %s)",
                len(body), client_address_var.get(), request_id_var.get(),
            )
            raise AuthenticationError("The Connect message's signature does not verify", detail="WEBHOOK_SIGNATURE")
        event = parse_connect_event(body)
        async with self._uow() as uow:
            request = await uow.signatures.by_envelope(event.envelope_id)
            if request is None:
                log.info("DocuSign Connect event %s for an unknown envelope %s ignored", event.event, event.envelope_id)
                return False
            if not await uow.signatures.first_application(event.event_key, event.envelope_id, event.event):
                log.info("DocuSign Connect event %s of envelope %s replayed: ignored", event.event, event.envelope_id)
                return False
            uow.enqueue(
                SYNC_QUEUE, SignatureSyncRequested(request_id=request.id, trigger=event.event),
                organization_id=request.organization_id, actor_id=DOCUSIGN_ACTOR,
            )
        return True

    async def sync(self, request_id: str) -> bool:
        """Brings a DocuSign request up to its envelope's state; on completion the completed document
        becomes a new version (once). False when the request is unknown or not a DocuSign one."""
        async with self._uow() as uow:
            found = await uow.signatures.get(request_id)
        if found is None or found.provider is not Provider.DOCUSIGN or not found.envelope_id:
            return False
        if found.finished:
            return True
        docusign = self._docusign()
        state = await docusign.envelope_state(found.envelope_id)
        completed = None
        if state.status is EnvelopeStatus.COMPLETED:
            completed = await docusign.completed_document(found.envelope_id)
        async with self._uow() as uow:
            document = await uow.documents.get_any(found.document_id, lock=True)
            request = await uow.signatures.get(request_id, lock=True)
            if document is None or request is None:
                return False
            events = request.apply_envelope_state(state.status, state.recipients, self._clock())
            stored = None
            if request.status is EnvelopeStatus.COMPLETED and completed is not None and events:
                stored = await self._store(document, completed, suffix="docusign")
            await self._apply(uow, document, request, events, DOCUSIGN_ACTOR, completed=stored,
                              origin=VersionOrigin.DOCUSIGN)
        return True

    # -- the steps -----------------------------------------------------------------------------------------
    def _docusign(self) -> SignatureProvider:
        if self._provider is None:
            raise ValidationError(
                "DocuSign is not configured: use the built-in signer (provider \"builtin\")",
                detail="DOCUSIGN_NOT_CONFIGURED",
                field_violations=[("provider", "DocuSign is not configured")],
            )
        return self._provider

    async def _latest(self, uow: DocumentUnitOfWork, document: Document, *, lock: bool = False) -> SignatureRequest:
        request = await uow.signatures.latest(document.id, lock=lock)
        if request is None:
            raise NotFoundError(f"document {document.id} has no signature request", detail="NO_SIGNATURE_REQUEST")
        return request

    async def _verified_bytes(self, document: Document, version: int) -> bytes:
        """The stored bytes of a version, checked against the digest recorded when it was added."""
        recorded = document.version(version)
        data = await self._storage.get_bytes(recorded.object_key)
        if hashlib.sha256(data).hexdigest() != recorded.sha256:
            raise IntegrationError(
                f"the stored file of version {version} does not match its recorded SHA-256", detail="STORAGE_DIGEST"
            )
        return data

    async def _seal(self, document: Document, request: SignatureRequest) -> StoredFile:
        """The signed version's file: the requested version with its signature page and PAdES seal."""
        pdf = await self._verified_bytes(document, request.version)
        lines = [
            SignatureLine(
                printed_name=s.printed_name, email=s.email, organization_id=s.organization_id, meaning=s.meaning,
                signed_at=s.signed_at or self._clock(), signed_sha256=s.signed_sha256,
            )
            for s in sorted(request.signers, key=lambda s: (s.signed_at or self._clock(), s.position))
        ]
        sealed = await asyncio.to_thread(self._sealer.seal, pdf, lines, title=document.title, document_id=document.id)
        return await self._store(document, sealed, suffix="signed")

    async def _store(self, document: Document, pdf: bytes, *, suffix: str) -> StoredFile:
        stem = document.current.filename.rsplit(".", 1)[0] or "document"
        stored = await self._documents.store_bytes(document.organization_id, pdf, f"{stem}-{suffix}.pdf")
        if stored.content_type != PDF:
            await asyncio.shield(self._storage.delete(stored.object_key))
            raise IntegrationError(f"the {suffix} document is not a PDF", detail="NOT_A_PDF")
        return stored

    async def _apply(
        self,
        uow: DocumentUnitOfWork,
        document: Document,
        request: SignatureRequest,
        events: Sequence[Event],
        actor_id: str,
        *,
        completed: StoredFile | None = None,
        origin: VersionOrigin = VersionOrigin.SIGNED,
        reason: str = "",
    ) -> None:
        """Applies what a change caused to the document, records every event, and saves both."""

        def keep(event: Message) -> None:
            uow.record(event, organization_id=request.organization_id, actor_id=actor_id)

        def audit(action: str, details: Mapping[str, str], by: str = actor_id) -> None:
            record_audit(uow, action, document, None, {"signature_request_id": request.id, **details}, actor_id=by)

        for event in events:
            if isinstance(event, SignerTurn):
                spec = event.signer.spec
                keep(SignatureRequested(
                    request_id=request.id, document_id=request.document_id, organization_id=request.organization_id,
                    submission_id=request.submission_id, signer_user_id=spec.user_id,
                    signer_organization_id=spec.organization_id, signer_role=spec.role, title=request.title,
                ))
            elif isinstance(event, SignerSigned):
                signer = event.signer
                audit("signature.signed", {
                    "position": str(signer.position), "meaning": signer.meaning, "printed_name": signer.printed_name,
                    "sha256": signer.signed_sha256, "signer_organization_id": signer.organization_id,
                }, signer.signed_by or actor_id)
            elif isinstance(event, SignerDeclined):
                audit("signature.declined", {
                    "position": str(event.signer.position), "reason": event.signer.decline_reason
                })
            elif isinstance(event, RequestFinished):
                keep(SignatureFinished(
                    request_id=request.id, document_id=request.document_id, organization_id=request.organization_id,
                    submission_id=request.submission_id, status=event.status.value,
                    requested_by=request.requested_by, finished_at=timestamp(event.at),
                    signer_user_ids=[s.signed_by for s in request.signers if s.signed_by],
                    signer_organization_ids=sorted({s.organization_id for s in request.signers if s.organization_id}),
                ))
                if event.status is not EnvelopeStatus.DECLINED:  # a decline is audited with its signer
                    audit(f"signature.{event.status.value.lower()}", {"reason": reason} if reason else {})
            elif isinstance(event, DocumentStatusMoved):
                change = self._move(document, request, event, completed, origin, actor_id)
                if change is not None:
                    record_status_change(uow, document, change, organization_id=request.organization_id,
                                         actor_id=actor_id)
        await uow.signatures.save(request)
        await uow.documents.save(document)

    def _move(
        self, document: Document, request: SignatureRequest, event: DocumentStatusMoved,
        completed: StoredFile | None, origin: VersionOrigin, actor_id: str,
    ) -> StatusChange | None:
        if event.to_status is not DocumentStatus.SIGNED:
            return document.change_status(event.to_status)
        if completed is None:  # DocuSign said completed, but the document could not be fetched with it
            raise IntegrationError("the completed document is missing", detail="COMPLETED_DOCUMENT_MISSING")
        change = document.add_signed_version(completed, actor_id, origin)
        request.attach_signed_version(document.current_version)
        return change


def _recipient(position: int, spec: SignerSpec) -> EnvelopeRecipient:
    return EnvelopeRecipient(
        recipient_id=str(position), name=spec.name, email=spec.email, routing_order=spec.routing_order,
        client_user_id=spec.user_id,
    )


def _check_return_url(url: str) -> None:
    """https, or http on loopback (a local client)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if len(url) > MAX_RETURN_URL or not host or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        raise ValidationError(
            "return_url must be an https URL (or http on loopback)",
            field_violations=[("return_url", "https, or http on loopback")],
        )
