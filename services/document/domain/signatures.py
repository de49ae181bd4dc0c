"""Signature requests (DocuSign's "envelopes"; the built-in signer uses the same words): who signs in
which order, who may sign now, and what each change causes. Pure Python: no SQL, no grpc, no I/O.

A request freezes one version of a document (its number and SHA-256) and lists signers in routing
order; equal orders sign in parallel, the next order's turn comes when every signer before it signed.
A signer is either a named user or "any user of organization X with at least role R".

Statuses (DOMAIN.md): the request starts SENT (the first order's turn came), becomes SIGNED once
someone signed and COMPLETED when everyone did; DECLINED, VOIDED and EXPIRED end it too. The
document follows (DOCUMENT_STATUS_AFTER): PENDING_SIGNATURE while the request is open, SIGNED when it
completes, REJECTED when a signer declines (DOMAIN.md's document status; a new request or a new
version starts again from there), and back to DRAFT when the request is voided or expires.

Every change answers the events it causes (SignerTurn, SignerSigned, SignerDeclined, RequestFinished,
DocumentStatusMoved); an action that changes nothing answers none.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from services.document.domain.vocabulary import (
    FINISHED_ENVELOPES,
    DocumentStatus,
    EnvelopeStatus,
    Provider,
    SignatureMeaning,
    SignerStatus,
)
from services.runtime.auth import ADMIN_ROLES, ROLE_IMPLIES, ROLES
from services.runtime.errors import AuthorizationError, PreconditionError, ValidationError

READ_ONLY_ROLES = frozenset({"auditor"})  # may read a signature request, never sign or decline one

MAX_SIGNERS = 20
MAX_REASON_LENGTH = 1000
MAX_MESSAGE_LENGTH = 2000
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# The document's status when a request reaches a status (the request's start: PENDING_SIGNATURE).
# A declined document may be sent again (other signers, or after a new version).
SENDABLE = frozenset({DocumentStatus.DRAFT, DocumentStatus.REJECTED})
DOCUMENT_STATUS_AFTER: dict[EnvelopeStatus, DocumentStatus] = {
    EnvelopeStatus.COMPLETED: DocumentStatus.SIGNED,
    EnvelopeStatus.DECLINED: DocumentStatus.REJECTED,
    EnvelopeStatus.VOIDED: DocumentStatus.DRAFT,
    EnvelopeStatus.EXPIRED: DocumentStatus.DRAFT,
}
# How far a status is along the way: an update never moves backwards (DocuSign redelivers and
# reorders its Connect events).
_ENVELOPE_RANK = {
    EnvelopeStatus.CREATED: 0,
    EnvelopeStatus.SENT: 1,
    EnvelopeStatus.DELIVERED: 2,
    EnvelopeStatus.SIGNED: 3,
    **{status: 4 for status in FINISHED_ENVELOPES},
}
_SIGNER_RANK = {
    SignerStatus.WAITING: 0,
    SignerStatus.SENT: 1,
    SignerStatus.DELIVERED: 2,
    SignerStatus.SIGNED: 3,
    SignerStatus.DECLINED: 3,
}
_TURN = frozenset({SignerStatus.SENT, SignerStatus.DELIVERED})


# -- who acts ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Person:
    """A user as far as signing cares (a Principal, or a signer confirmed by identity)."""

    user_id: str
    organization_id: str
    roles: frozenset[str]
    printed_name: str = ""
    email: str = ""

    def has_role(self, role: str) -> bool:
        implied = (ROLE_IMPLIES.get(r, frozenset()) for r in self.roles)
        return role in self.roles.union(*implied)

    @property
    def is_system_admin(self) -> bool:
        return "system_admin" in self.roles


# -- the aggregate --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SignerSpec:
    user_id: str = ""  # a named user; or empty with organization_id + role
    organization_id: str = ""
    role: str = ""
    name: str = ""  # DocuSign recipients
    email: str = ""
    routing_order: int = 1

    def admits(self, person: Person) -> bool:
        """Whether this person is (one of) the signer(s) this spec asks for."""
        if self.user_id:
            return person.user_id == self.user_id
        return (
            bool(self.organization_id)
            and person.organization_id == self.organization_id
            and person.has_role(self.role)
        )


@dataclass
class Signer:
    position: int  # from 1, in the order requested
    spec: SignerSpec
    status: SignerStatus = SignerStatus.WAITING
    signed_by: str = ""  # the user who signed
    printed_name: str = ""
    email: str = ""
    organization_id: str = ""  # the signer's organization when they signed
    meaning: str = ""
    signed_at: datetime | None = None  # or declined
    signed_sha256: str = ""
    decline_reason: str = ""

    @property
    def routing_order(self) -> int:
        return self.spec.routing_order

    @property
    def done(self) -> bool:
        return self.status in (SignerStatus.SIGNED, SignerStatus.DECLINED)


@dataclass
class SignatureRequest:
    id: str
    document_id: str
    organization_id: str  # the document's owner
    submission_id: str
    title: str  # the document's, for notifications
    provider: Provider
    version: int  # frozen: the version sent for signature
    sha256: str  # and its digest
    signers: list[Signer]
    requested_by: str
    created_at: datetime
    status: EnvelopeStatus = EnvelopeStatus.CREATED
    message: str = ""
    envelope_id: str = ""  # DocuSign
    signed_version: int = 0  # the sealed (or DocuSign-completed) version, once completed
    finished_at: datetime | None = None

    # -- questions ----------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.status in FINISHED_ENVELOPES

    def current_signers(self) -> list[Signer]:
        """The signers whose turn it is."""
        return [s for s in self.signers if s.status in _TURN]

    def may_sign(self, person: Person) -> bool:
        return self._slot_for(person) is not None

    def signed_organizations(self) -> frozenset[str]:
        """The organizations whose users signed (for "signed by owner / counterparty")."""
        signed = (s for s in self.signers if s.status is SignerStatus.SIGNED)
        return frozenset(s.organization_id for s in signed if s.organization_id)

    # -- actions ------------------------------------------------------------------------------------
    def send(self) -> list[Event]:
        """Out for signature: the first routing order's turn; the document waits for signatures."""
        self._require_status(EnvelopeStatus.CREATED, "sent")
        self.status = EnvelopeStatus.SENT
        return [DocumentStatusMoved(DocumentStatus.DRAFT, DocumentStatus.PENDING_SIGNATURE), *self._advance()]

    def sign(self, signer: Person, meaning: str, current_sha256: str, at: datetime) -> list[Event]:
        """A built-in signature by a re-authenticated signer, meaning `meaning`, of the document whose
        current version has `current_sha256` (it must still be the version requested)."""
        slot = self.check_signature(signer, meaning, current_sha256)
        slot.status = SignerStatus.SIGNED
        slot.signed_by, slot.printed_name, slot.email = signer.user_id, signer.printed_name, signer.email
        slot.organization_id, slot.meaning = signer.organization_id, meaning
        slot.signed_at, slot.signed_sha256 = at, self.sha256
        return [SignerSigned(replace(slot)), *self._after_signatures(at)]

    def check_signature(self, signer: Person, meaning: str, current_sha256: str) -> Signer:
        """What `sign` refuses, without signing (asked before the signer re-authenticates); the slot
        the signer would fill."""
        if meaning not in SignatureMeaning.__members__.values():
            allowed = ", ".join(m.value for m in SignatureMeaning)
            raise ValidationError(
                f"Unknown signature meaning {meaning!r}: use one of {allowed}",
                field_violations=[("meaning", f"one of {allowed}")],
            )
        self._require_open("signed")
        if self.provider is not Provider.BUILTIN:
            raise PreconditionError(
                "This request is signed through DocuSign: ask for a signing URL", detail="SIGNED_ELSEWHERE"
            )
        if current_sha256 != self.sha256:
            raise PreconditionError(
                "The document changed since signatures were requested: void this request and ask again",
                detail="DOCUMENT_CHANGED",
            )
        return self._turn_of(signer, "sign")

    def turn_of(self, person: Person) -> Signer:
        """The slot this person signs now; refused (finished, not their turn, not a signer) otherwise."""
        self._require_open("signed")
        return self._turn_of(person, "sign")

    def decline(self, signer: Person, reason: str, at: datetime) -> list[Event]:
        """A signer whose turn it is refuses; the request ends DECLINED."""
        reason = _required_reason(reason)
        self._require_open("declined")
        if self.provider is not Provider.BUILTIN:
            raise PreconditionError("This request is declined in DocuSign", detail="SIGNED_ELSEWHERE")
        slot = self._turn_of(signer, "decline")
        slot.status, slot.decline_reason, slot.signed_at = SignerStatus.DECLINED, reason, at
        slot.signed_by, slot.printed_name, slot.email = signer.user_id, signer.printed_name, signer.email
        slot.organization_id = signer.organization_id
        return [SignerDeclined(replace(slot)), *self._finish(EnvelopeStatus.DECLINED, at)]

    def void(self, by: Person, reason: str, at: datetime) -> list[Event]:
        """The requester (or an admin of the owning organization) withdraws the request."""
        _required_reason(reason)
        self._require_open("voided")
        owner_admin = by.organization_id == self.organization_id and bool(by.roles & ADMIN_ROLES)
        if by.user_id != self.requested_by and not owner_admin and not by.is_system_admin:
            raise AuthorizationError(
                "Only who asked for the signatures, or an admin of the owning organization, may void the request",
                detail="NOT_REQUESTER",
            )
        return self._finish(EnvelopeStatus.VOIDED, at)

    def apply_envelope_state(
        self, status: EnvelopeStatus, recipients: Iterable[RecipientUpdate], at: datetime
    ) -> list[Event]:
        """DocuSign's view of the envelope. Monotonic: an older or repeated state changes nothing."""
        if self.finished:
            return []
        events: list[Event] = []
        by_position = {str(s.position): s for s in self.signers}
        for update in recipients:
            slot = by_position.get(update.recipient_id)
            if slot is None or _SIGNER_RANK[update.status] <= _SIGNER_RANK[slot.status]:
                continue
            was_waiting = slot.status is SignerStatus.WAITING
            slot.status = update.status
            if update.status is SignerStatus.SIGNED:
                slot.printed_name, slot.email = slot.spec.name, slot.spec.email
                slot.organization_id, slot.signed_sha256 = slot.spec.organization_id, self.sha256
                slot.signed_at = update.signed_at or at
                events.append(SignerSigned(replace(slot)))
            elif update.status is SignerStatus.DECLINED:
                slot.decline_reason, slot.signed_at = update.declined_reason, update.signed_at or at
                slot.organization_id = slot.spec.organization_id
                events.append(SignerDeclined(replace(slot)))
            elif was_waiting:
                events.append(SignerTurn(replace(slot)))
        if status in FINISHED_ENVELOPES:
            if status is EnvelopeStatus.COMPLETED:
                for slot in self.signers:  # DocuSign completes only when every recipient did
                    if slot.status is not SignerStatus.SIGNED:
                        slot.status, slot.signed_at = SignerStatus.SIGNED, slot.signed_at or at
                        slot.printed_name, slot.email = slot.spec.name, slot.spec.email
                        slot.organization_id, slot.signed_sha256 = slot.spec.organization_id, self.sha256
                        events.append(SignerSigned(replace(slot)))
            return events + self._finish(status, at)
        if _ENVELOPE_RANK[status] > _ENVELOPE_RANK[self.status]:
            self.status = status
        return events + self._after_signatures(at)

    def attach_signed_version(self, version: int) -> None:
        """The version holding the completed document (sealed, or DocuSign's)."""
        if self.status is not EnvelopeStatus.COMPLETED:
            raise PreconditionError("Only a completed request has a signed version", detail="NOT_COMPLETED")
        if self.signed_version:
            raise PreconditionError("The signed version is already attached", detail="ALREADY_ATTACHED")
        self.signed_version = version

    # -- rules ----------------------------------------------------------------------------------------
    def _require_status(self, status: EnvelopeStatus, verb: str) -> None:
        if self.status is not status:
            raise PreconditionError(
                f"A {self.status.value} signature request cannot be {verb}", detail="REQUEST_STATE"
            )

    def _require_open(self, verb: str) -> None:
        if self.finished or self.status is EnvelopeStatus.CREATED:
            raise PreconditionError(
                f"A {self.status.value} signature request cannot be {verb}", detail="REQUEST_FINISHED"
            )

    def _slot_for(self, person: Person) -> Signer | None:
        """The slot this person fills now: their named slot before a role slot."""
        if any(s.signed_by == person.user_id for s in self.signers if s.done):
            return None
        mine = [s for s in self.current_signers() if s.spec.admits(person)]
        mine.sort(key=lambda s: (not s.spec.user_id, s.position))
        return mine[0] if mine else None

    def _turn_of(self, person: Person, verb: str) -> Signer:
        if person.roles and person.roles <= READ_ONLY_ROLES:
            raise AuthorizationError(f"Auditors are read-only and cannot {verb} a document", detail="READ_ONLY_ROLE")
        slot = self._slot_for(person)
        if slot is not None:
            return slot
        if any(s.signed_by == person.user_id for s in self.signers if s.done):
            raise PreconditionError("You already signed this request", detail="ALREADY_SIGNED")
        if any(s.spec.admits(person) for s in self.signers if s.status is SignerStatus.WAITING):
            raise PreconditionError(
                f"It is not your turn to {verb}: earlier signers have not signed yet", detail="NOT_YOUR_TURN"
            )
        raise AuthorizationError(f"You are not a signer of this request and cannot {verb} it", detail="NOT_A_SIGNER")

    def _advance(self) -> list[Event]:
        """Gives the turn to the next routing order once every earlier signer signed."""
        pending = [s for s in self.signers if s.status is not SignerStatus.SIGNED]
        if not pending:
            return []
        order = min(s.routing_order for s in pending)
        events: list[Event] = []
        for slot in pending:
            if slot.routing_order == order and slot.status is SignerStatus.WAITING:
                slot.status = SignerStatus.SENT
                events.append(SignerTurn(replace(slot)))
        return events

    def _after_signatures(self, at: datetime) -> list[Event]:
        if all(s.status is SignerStatus.SIGNED for s in self.signers):
            return self._finish(EnvelopeStatus.COMPLETED, at)
        if any(s.status is SignerStatus.SIGNED for s in self.signers):
            self.status = EnvelopeStatus.SIGNED if _ENVELOPE_RANK[self.status] < 3 else self.status
        return self._advance()

    def _finish(self, status: EnvelopeStatus, at: datetime) -> list[Event]:
        self.status, self.finished_at = status, at
        return [
            RequestFinished(status, at),
            DocumentStatusMoved(DocumentStatus.PENDING_SIGNATURE, DOCUMENT_STATUS_AFTER[status]),
        ]


class RecipientUpdate(Protocol):
    """A recipient's state as DocuSign reports it (ports.RecipientState fits)."""

    @property
    def recipient_id(self) -> str: ...

    @property
    def status(self) -> SignerStatus: ...

    @property
    def signed_at(self) -> datetime | None: ...

    @property
    def declined_reason(self) -> str: ...


# -- what a change causes --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SignerTurn:
    signer: Signer


@dataclass(frozen=True)
class SignerSigned:
    signer: Signer


@dataclass(frozen=True)
class SignerDeclined:
    signer: Signer


@dataclass(frozen=True)
class RequestFinished:
    status: EnvelopeStatus
    at: datetime


@dataclass(frozen=True)
class DocumentStatusMoved:
    from_status: DocumentStatus
    to_status: DocumentStatus


Event = SignerTurn | SignerSigned | SignerDeclined | RequestFinished | DocumentStatusMoved


# -- starting a request ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DocumentFacts:
    """What a request needs to know of its document."""

    id: str
    organization_id: str
    submission_id: str
    title: str
    status: DocumentStatus
    version: int
    sha256: str
    content_type: str


def new_request(
    document: DocumentFacts,
    specs: Sequence[SignerSpec],
    *,
    provider: str,
    requested_by: str,
    at: datetime,
    message: str = "",
    request_id: str | None = None,
) -> SignatureRequest:
    """A request (status CREATED; `send` puts it out) for the document's current version."""
    chosen = parse_provider(provider)
    if document.status not in SENDABLE:
        raise PreconditionError(
            f"Only a DRAFT or REJECTED document can be sent for signature (this one is {document.status.value})",
            detail="DOCUMENT_STATE",
        )
    if document.content_type != "application/pdf":
        raise ValidationError(
            "Only PDF documents can be signed (the signed copy carries a signature page and a PDF signature)",
            detail="NOT_A_PDF",
        )
    if not _SHA256.match(document.sha256) or document.version < 1:
        raise ValidationError("The document has no stored version to sign", detail="NO_VERSION")
    if len(message) > MAX_MESSAGE_LENGTH:
        raise ValidationError(
            "The message is too long", field_violations=[("message", f"at most {MAX_MESSAGE_LENGTH} characters")]
        )
    checked = check_signers(specs, chosen)
    return SignatureRequest(
        id=request_id or str(uuid.uuid4()),
        document_id=document.id,
        organization_id=document.organization_id,
        submission_id=document.submission_id,
        title=document.title,
        provider=chosen,
        version=document.version,
        sha256=document.sha256,
        signers=[Signer(position=i, spec=spec) for i, spec in enumerate(checked, start=1)],
        requested_by=requested_by,
        created_at=at,
        message=message,
    )


def parse_provider(provider: str) -> Provider:
    try:
        return Provider(provider or Provider.BUILTIN)
    except ValueError:
        raise ValidationError(
            f"Unknown signature provider {provider!r}: use builtin or docusign",
            field_violations=[("provider", "builtin or docusign")],
        ) from None


def check_signers(specs: Sequence[SignerSpec], provider: Provider) -> list[SignerSpec]:
    """The signers, checked, with routing order 0 read as 1. Built in: each a named user or an
    organization with a role. DocuSign: each with a name and an email (a user id makes the signer
    an embedded one, who signs through CreateSigningUrl)."""
    if not specs:
        raise ValidationError("At least one signer is required", field_violations=[("signers", "at least one")])
    if len(specs) > MAX_SIGNERS:
        raise ValidationError(
            "Too many signers", field_violations=[("signers", f"at most {MAX_SIGNERS}")]
        )
    violations: list[tuple[str, str]] = []
    checked: list[SignerSpec] = []
    for index, spec in enumerate(specs):
        where = f"signers[{index}]"
        if spec.routing_order < 0:
            violations.append((f"{where}.routing_order", "from 1"))
        if spec.role and spec.role not in ROLES:
            violations.append((f"{where}.role", f"one of {', '.join(sorted(ROLES))}"))
        elif spec.role in READ_ONLY_ROLES:
            violations.append((f"{where}.role", "auditors are read-only and cannot sign"))
        if provider is Provider.BUILTIN:
            named, by_role = bool(spec.user_id), bool(spec.organization_id or spec.role)
            if named == by_role:
                violations.append((where, "either user_id, or organization_id with role"))
            elif by_role and not (spec.organization_id and spec.role):
                violations.append((where, "organization_id and role go together"))
        else:
            if not spec.name.strip():
                violations.append((f"{where}.name", "required for DocuSign"))
            if not _EMAIL.match(spec.email):
                violations.append((f"{where}.email", "a valid email address is required for DocuSign"))
        checked.append(replace(spec, routing_order=spec.routing_order or 1))
    users = [s.user_id for s in checked if s.user_id]
    if len(users) != len(set(users)):
        violations.append(("signers", "a user can be named only once"))
    if violations:
        raise ValidationError("Invalid signers", field_violations=violations)
    return checked


def _required_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise ValidationError("A reason is required", field_violations=[("reason", "required")])
    if len(reason) > MAX_REASON_LENGTH:
        raise ValidationError(
            "The reason is too long", field_violations=[("reason", f"at most {MAX_REASON_LENGTH} characters")]
        )
    return reason
