"""Signature requests, their signers and the DocuSign Connect events already applied: SQL only.

A request row holds the envelope state; each signer is a row keyed by (request, position). At most one
request of a document is open at a time (a partial unique index). `applied_connect_events` keeps the
key of every Connect event applied, written in the transaction of its change: a replayed or
redelivered call finds its key and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.document.domain.signatures import SignatureRequest, Signer, SignerSpec
from services.document.domain.vocabulary import (
    FINISHED_ENVELOPES,
    DocumentStatus,
    EnvelopeStatus,
    Provider,
    SignerStatus,
)
from services.document.store.tables import documents, metadata
from services.runtime.db import canonical_uuid, execute_unique, timestamp_column
from services.runtime.errors import ConflictError

_id = UUID(as_uuid=False)
_FINISHED = sorted(status.value for status in FINISHED_ENVELOPES)
OPEN_REQUEST_INDEX = "signature_requests_one_open"

signature_requests = sa.Table(
    "signature_requests",
    metadata,
    sa.Column("id", _id, primary_key=True),
    sa.Column("document_id", _id, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("organization_id", _id, nullable=False),  # the document's owner
    sa.Column("submission_id", sa.Text, nullable=False, server_default=""),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("provider", sa.Text, nullable=False),  # builtin | docusign
    sa.Column("status", sa.Text, nullable=False),  # EnvelopeStatus
    sa.Column("version", sa.Integer, nullable=False),  # the version sent for signature
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("signed_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("envelope_id", sa.Text, nullable=False, server_default=""),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("requested_by", sa.Text, nullable=False),
    sa.Column("idempotency_key", sa.Text, nullable=False, server_default=""),  # RequestSignature.request_id
    timestamp_column("created_at", nullable=False, default_now=True),
    timestamp_column("finished_at"),
    sa.Index("signature_requests_document", "document_id", "created_at"),
    sa.Index(
        OPEN_REQUEST_INDEX,
        "document_id",
        unique=True,
        postgresql_where=sa.text(f"status NOT IN ({', '.join(repr(s) for s in _FINISHED)})"),
    ),
    sa.Index("signature_requests_envelope", "envelope_id", unique=True, postgresql_where=sa.text("envelope_id <> ''")),
    sa.Index(
        "signature_requests_idempotency",
        "document_id",
        "idempotency_key",
        unique=True,
        postgresql_where=sa.text("idempotency_key <> ''"),
    ),
)

signature_signers = sa.Table(
    "signature_signers",
    metadata,
    sa.Column("request_id", _id, sa.ForeignKey("signature_requests.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("routing_order", sa.Integer, nullable=False),
    # As requested: a named user, or any user of an organization with at least a role.
    sa.Column("user_id", sa.Text, nullable=False, server_default=""),
    sa.Column("organization_id", sa.Text, nullable=False, server_default=""),
    sa.Column("role", sa.Text, nullable=False, server_default=""),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("email", sa.Text, nullable=False, server_default=""),
    # What happened (21 CFR 11.50: printed name, time, meaning; and the digest of what was signed).
    sa.Column("status", sa.Text, nullable=False),  # SignerStatus
    sa.Column("signed_by", sa.Text, nullable=False, server_default=""),
    sa.Column("printed_name", sa.Text, nullable=False, server_default=""),
    sa.Column("signer_email", sa.Text, nullable=False, server_default=""),
    sa.Column("signer_organization_id", sa.Text, nullable=False, server_default=""),
    sa.Column("meaning", sa.Text, nullable=False, server_default=""),
    timestamp_column("signed_at"),
    sa.Column("signed_sha256", sa.Text, nullable=False, server_default=""),
    sa.Column("decline_reason", sa.Text, nullable=False, server_default=""),
)

applied_connect_events = sa.Table(
    "applied_connect_events",
    metadata,
    sa.Column("event_key", sa.Text, primary_key=True),  # docusign_connect.ConnectEvent.event_key
    sa.Column("envelope_id", sa.Text, nullable=False),
    sa.Column("event", sa.Text, nullable=False),
    timestamp_column("applied_at", nullable=False, default_now=True),
)

_req = signature_requests.c
_sig = signature_signers.c


class SignatureRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, request: SignatureRequest, idempotency_key: str = "") -> None:
        """Stores a new request; ConflictError when the document already has an open one."""
        await execute_unique(
            self._session,
            sa.insert(signature_requests).values(**_request_values(request), idempotency_key=idempotency_key),
            ConflictError(
                "The document already has an open signature request: void it first", detail="REQUEST_OPEN"
            ),
        )
        rows = [_signer_values(request.id, s) for s in request.signers]
        await self._session.execute(sa.insert(signature_signers), rows)

    async def save(self, request: SignatureRequest) -> None:
        await self._session.execute(
            sa.update(signature_requests).where(_req.id == request.id).values(**_request_values(request))
        )
        for signer in request.signers:
            await self._session.execute(
                sa.update(signature_signers)
                .where(_sig.request_id == request.id, _sig.position == signer.position)
                .values(**_signer_values(request.id, signer))
            )

    async def latest(self, document_id: str, *, lock: bool = False) -> SignatureRequest | None:
        """The document's most recent request."""
        key = canonical_uuid(document_id)
        if key is None:
            return None
        return await self._one(_req.document_id == key, lock=lock)

    async def get(self, request_id: str, *, lock: bool = False) -> SignatureRequest | None:
        key = canonical_uuid(request_id)
        return None if key is None else await self._one(_req.id == key, lock=lock)

    async def by_envelope(self, envelope_id: str) -> SignatureRequest | None:
        return await self._one(_req.envelope_id == envelope_id, lock=False) if envelope_id else None

    async def by_idempotency_key(self, document_id: str, key: str) -> SignatureRequest | None:
        return await self._one(sa.and_(_req.document_id == document_id, _req.idempotency_key == key), lock=False)

    async def _one(self, condition: sa.ColumnElement[bool], *, lock: bool) -> SignatureRequest | None:
        statement = sa.select(signature_requests).where(condition).order_by(_req.created_at.desc()).limit(1)
        if lock:
            statement = statement.with_for_update()
        row = (await self._session.execute(statement)).mappings().first()
        if row is None:
            return None
        signers = (
            await self._session.execute(
                sa.select(signature_signers).where(_sig.request_id == row["id"]).order_by(_sig.position)
            )
        ).mappings()
        return _request(row, [_signer(s) for s in signers])

    async def first_application(self, event_key: str, envelope_id: str, event: str) -> bool:
        """Keeps a Connect event's key; False when it was applied before (a replay)."""
        inserted = await self._session.scalar(
            pg_insert(applied_connect_events)
            .values(event_key=event_key, envelope_id=envelope_id, event=event)
            .on_conflict_do_nothing()
            .returning(applied_connect_events.c.event_key)
        )
        return inserted is not None

    async def signing_organizations(self, document_ids: Sequence[str]) -> dict[str, frozenset[str]]:
        """Document id → the organizations whose users signed its current, signed version (SIGNED
        documents whose completed request produced that version)."""
        keys = [k for k in (canonical_uuid(d) for d in document_ids) if k]
        if not keys:
            return {}
        rows = await self._session.execute(
            sa.select(_req.document_id, _sig.signer_organization_id)
            .join(signature_signers, _sig.request_id == _req.id)
            .join(documents, documents.c.id == _req.document_id)
            .where(
                _req.document_id.in_(keys),
                _req.status == EnvelopeStatus.COMPLETED.value,
                _req.signed_version == documents.c.current_version,
                documents.c.status == DocumentStatus.SIGNED.value,
                _sig.status == SignerStatus.SIGNED.value,
                _sig.signer_organization_id != "",
            )
        )
        found: dict[str, set[str]] = {}
        for document_id, organization_id in rows:
            found.setdefault(str(document_id), set()).add(organization_id)
        return {document_id: frozenset(organizations) for document_id, organizations in found.items()}


# -- rows ↔ aggregate -------------------------------------------------------------------------------------


def _request_values(request: SignatureRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "document_id": request.document_id,
        "organization_id": request.organization_id,
        "submission_id": request.submission_id,
        "title": request.title,
        "provider": request.provider.value,
        "status": request.status.value,
        "version": request.version,
        "sha256": request.sha256,
        "signed_version": request.signed_version,
        "envelope_id": request.envelope_id,
        "message": request.message,
        "requested_by": request.requested_by,
        "created_at": request.created_at,
        "finished_at": request.finished_at,
    }


def _signer_values(request_id: str, signer: Signer) -> dict[str, Any]:
    spec = signer.spec
    return {
        "request_id": request_id,
        "position": signer.position,
        "routing_order": spec.routing_order,
        "user_id": spec.user_id,
        "organization_id": spec.organization_id,
        "role": spec.role,
        "name": spec.name,
        "email": spec.email,
        "status": signer.status.value,
        "signed_by": signer.signed_by,
        "printed_name": signer.printed_name,
        "signer_email": signer.email,
        "signer_organization_id": signer.organization_id,
        "meaning": signer.meaning,
        "signed_at": signer.signed_at,
        "signed_sha256": signer.signed_sha256,
        "decline_reason": signer.decline_reason,
    }


def _request(row: Any, signers: list[Signer]) -> SignatureRequest:
    return SignatureRequest(
        id=str(row["id"]),
        document_id=str(row["document_id"]),
        organization_id=str(row["organization_id"]),
        submission_id=row["submission_id"],
        title=row["title"],
        provider=Provider(row["provider"]),
        version=row["version"],
        sha256=row["sha256"],
        signers=signers,
        requested_by=row["requested_by"],
        created_at=row["created_at"],
        status=EnvelopeStatus(row["status"]),
        message=row["message"],
        envelope_id=row["envelope_id"],
        signed_version=row["signed_version"],
        finished_at=row["finished_at"],
    )


def _signer(row: Any) -> Signer:
    return Signer(
        position=row["position"],
        spec=SignerSpec(
            user_id=row["user_id"],
            organization_id=row["organization_id"],
            role=row["role"],
            name=row["name"],
            email=row["email"],
            routing_order=row["routing_order"],
        ),
        status=SignerStatus(row["status"]),
        signed_by=row["signed_by"],
        printed_name=row["printed_name"],
        email=row["signer_email"],
        organization_id=row["signer_organization_id"],
        meaning=row["meaning"],
        signed_at=row["signed_at"],
        signed_sha256=row["signed_sha256"],
        decline_reason=row["decline_reason"],
    )
