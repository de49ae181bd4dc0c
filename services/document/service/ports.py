"""What the document use cases need from the outside world, as protocols (adapters in ../adapters,
the identity client in services/runtime/identity_client.py). Values crossing a port are plain data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from services.document.domain.vocabulary import DocumentType, EnvelopeStatus, SignerStatus


# -- generation from templates ---------------------------------------------------------------------
@dataclass(frozen=True)
class TemplateFieldInfo:
    name: str
    description: str
    required: bool


@dataclass(frozen=True)
class TemplateInfo:
    name: str  # e.g. "nda"
    title: str  # e.g. "Mutual Non-Disclosure Agreement"
    document_type: DocumentType
    fields: tuple[TemplateFieldInfo, ...]


@dataclass(frozen=True)
class MoleculeRow:
    """One row of a generated document's molecule table; `smiles` empty for a blinded sample."""

    label: str
    smiles: str = ""
    formula: str = ""
    molecular_weight: float = 0.0
    amount: str = ""
    notes: str = ""


class TemplateRenderer(Protocol):
    def templates(self) -> Sequence[TemplateInfo]: ...

    def render(self, name: str, fields: Mapping[str, str], molecules: Sequence[MoleculeRow] = ()) -> bytes:
        """A PDF/A document. Raises NotFoundError for an unknown template and ValidationError (field
        violations) for a missing required field or an unknown one."""
        ...

    def preview(self, name: str) -> bytes:
        """The template rendered with sample values."""
        ...


# -- the platform's seal on built-in signatures ------------------------------------------------------
@dataclass(frozen=True)
class SignatureLine:
    """One signature as printed on the signature page (21 CFR 11.50: name, time, meaning)."""

    printed_name: str
    email: str
    organization_id: str
    meaning: str
    signed_at: datetime
    signed_sha256: str  # of the version that was signed


@dataclass(frozen=True)
class SealCheck:
    intact: bool  # a signature covers the document and its digest matches
    trusted: bool  # signed by the platform's certificate
    covers_whole_document: bool
    signer_certificate: str  # subject, human readable
    signed_at: datetime | None
    summary: str


class Sealer(Protocol):
    def seal(self, pdf: bytes, lines: Sequence[SignatureLine], *, title: str, document_id: str) -> bytes:
        """The PDF with a signature page appended and a PAdES signature by the platform's key.
        Raises ValidationError when `pdf` is not a PDF."""
        ...

    def verify(self, pdf: bytes) -> SealCheck: ...


# -- re-authentication of a signer (identity over gRPC) ----------------------------------------------
@dataclass(frozen=True)
class ConfirmedSigner:
    user_id: str
    printed_name: str
    email: str
    organization_id: str
    roles: frozenset[str]


class SignerIdentities(Protocol):
    async def confirm_signer(self, credentials: Mapping[str, str], password: str, mfa_code: str) -> ConfirmedSigner:
        """Checks the caller's password (and MFA code) again with the identity service; raises
        AuthenticationError when wrong (it counts toward the lockout), IntegrationError when identity
        is unreachable. `credentials` is the caller's authorization metadata, forwarded."""
        ...


# -- DocuSign (eSignature REST) -----------------------------------------------------------------------
@dataclass(frozen=True)
class EnvelopeRecipient:
    recipient_id: str  # our signer position, as a string
    name: str
    email: str
    routing_order: int
    client_user_id: str  # our user id: makes the recipient an embedded signer


@dataclass(frozen=True)
class RecipientState:
    recipient_id: str
    status: SignerStatus
    signed_at: datetime | None = None
    declined_reason: str = ""


@dataclass(frozen=True)
class EnvelopeState:
    envelope_id: str
    status: EnvelopeStatus
    recipients: tuple[RecipientState, ...] = field(default_factory=tuple)


class SignatureProvider(Protocol):
    """An external e-signature service (DocuSign). Raises IntegrationError when it cannot be reached or
    refuses; never retries a non-idempotent call blindly."""

    async def create_envelope(
        self, *, pdf: bytes, filename: str, subject: str, message: str, recipients: Sequence[EnvelopeRecipient]
    ) -> str:
        """Creates and sends an envelope; answers its id."""
        ...

    async def signing_url(self, envelope_id: str, recipient: EnvelopeRecipient, return_url: str) -> str: ...

    async def envelope_state(self, envelope_id: str) -> EnvelopeState: ...

    async def completed_document(self, envelope_id: str) -> bytes:
        """The combined signed PDF of a completed envelope."""
        ...

    async def void(self, envelope_id: str, reason: str) -> None: ...
