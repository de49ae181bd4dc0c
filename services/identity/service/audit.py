"""The audit trail: every service's AuditRecorded events appended hash-chained (a bus consumer), and read."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC

from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from nats.aio.msg import Msg

from bus.consumer import PoisonError
from services.identity import domain
from services.identity.domain import AuditEntry, audit_hash
from services.identity.service.base import UseCases
from services.identity.store import IdentityUnitOfWork
from services.runtime.auth import Principal
from services.runtime.pagination import PageRequest
from services.runtime.uow import Transactions

CONSUMER_NAME = "identity-audit-trail"


class AuditTrail:
    def __init__(self, uow: Transactions[IdentityUnitOfWork]) -> None:
        self._uow = uow

    async def handle(self, envelope: EventEnvelope, msg: Msg | None = None) -> None:
        event = AuditRecorded()
        if not envelope.payload.Unpack(event):
            raise PoisonError(f"not an AuditRecorded event: {envelope.payload.type_url}")
        async with self._uow() as uow:
            await uow.audit_log.lock_for_append()
            if await uow.audit_log.contains(envelope.id):
                return  # a redelivered event finds its id and stops
            last_sequence, last_hash = await uow.audit_log.last_link()
            entry = AuditEntry(
                id=envelope.id,
                sequence=last_sequence + 1,
                occurred_at=envelope.occurred_at.ToDatetime(tzinfo=UTC),
                source=envelope.source,
                action=event.action,
                outcome=AuditRecorded.Outcome.Name(event.outcome),
                actor_id=envelope.actor_id,
                organization_id=envelope.organization_id,
                target_type=event.target_type,
                target_id=event.target_id,
                client_address=event.client_address,
                request_id=event.request_id,
                details=dict(event.details),
            )
            await uow.audit_log.append(replace(entry, hash=audit_hash(last_hash, entry)))


class AuditUseCases(UseCases):
    async def list_audit_events(
        self, principal: Principal, page: PageRequest, *, action: str, target_id: str, organization_id: str
    ) -> tuple[list[AuditEntry], int]:
        if principal.has_any_role("auditor"):  # platform auditors and system admins read every organization
            scope: str | None = organization_id or None
        else:
            domain.require_user_admin(principal, principal.organization_id)
            scope = principal.organization_id
        async with self._uow() as uow:
            return await uow.audit_log.page(page, organization_id=scope, action_prefix=action, target_id=target_id)

    async def audit_trail(self) -> list[AuditEntry]:
        """The whole trail in order, for verification (operators; tests)."""
        async with self._uow() as uow:
            return await uow.audit_log.everything()
