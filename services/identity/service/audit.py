"""The audit trail: every service's AuditRecorded events appended hash-chained (a bus consumer), and read."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC

from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from nats.aio.msg import Msg

from bus.consumer import PoisonError
from services.identity import domain
from services.identity.domain import Anchor, AuditEntry, AuditFilter, Verification, audit_csv, audit_hash
from services.identity.service.base import UseCases
from services.identity.store import IdentityUnitOfWork
from services.runtime.auth import Principal
from services.runtime.errors import PreconditionError, ValidationError
from services.runtime.pagination import PageRequest
from services.runtime.uow import Transactions

CONSUMER_NAME = "identity-audit-trail"
VERIFY_BATCH = 1000  # entries read per transaction while walking the chain
log = logging.getLogger("molbridge.identity.audit")


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
                trace_id=event.trace_id,
            )
            await uow.audit_log.append(replace(entry, hash=audit_hash(last_hash, entry)))


@dataclass(frozen=True)
class AuditExport:
    """The trail as CSV: its file name, and its text in chunks (header first)."""

    filename: str
    chunks: AsyncIterator[str]


class AuditUseCases(UseCases):
    async def list_audit_events(
        self, principal: Principal, page: PageRequest, *, organization_id: str = "", **filters: str
    ) -> tuple[list[AuditEntry], int]:
        """Newest first. Filters: action (a prefix), target_type, target_id, actor_id, occurred_after and
        occurred_before (RFC 3339)."""
        where = domain.audit_filter(domain.audit_scope(principal, organization_id), **filters)
        async with self._uow() as uow:
            return await uow.audit_log.page(page, where)

    async def export_audit_events(
        self, principal: Principal, *, organization_id: str = "", **filters: str
    ) -> AuditExport:
        """The filtered trail, oldest first, as CSV. The caller's rights and the filters are checked
        now (an error before anything is sent); entries are read while the chunks are consumed, one
        short transaction per chunk."""
        where = domain.audit_filter(domain.audit_scope(principal, organization_id), **filters)
        return AuditExport(audit_csv.FILENAME, self._csv_chunks(where))

    async def _csv_chunks(self, where: AuditFilter) -> AsyncIterator[str]:
        yield audit_csv.header()
        after = 0
        while True:
            async with self._uow() as uow:
                batch = await uow.audit_log.batch_after(after, audit_csv.ROWS_PER_CHUNK, where)
            if not batch:
                return
            yield audit_csv.rows(batch)
            after = batch[-1].sequence

    async def audit_history(
        self, principal: Principal, page: PageRequest, target_type: str, target_id: str
    ) -> tuple[list[AuditEntry], int]:
        """One object's history, oldest first (see AuditLog.history)."""
        scope = domain.audit_scope(principal)
        target_type, target_id = target_type.strip(), target_id.strip()
        missing = [(name, "required") for name, value in (("target_type", target_type), ("target_id", target_id))
                   if not value]
        if missing:
            raise ValidationError("Name the object whose history you want", field_violations=missing)
        async with self._uow() as uow:
            return await uow.audit_log.history(
                page, target_type=target_type, target_id=target_id, organization_id=scope
            )

    async def verify_audit_trail(self, principal: Principal) -> Verification:
        """Walks the whole chain from the genesis (a batch per transaction) and checks every anchor.
        The broken entry's id is left out when the caller may not see its organization."""
        scope = domain.audit_scope(principal)
        walk = domain.ChainWalk(await self._anchors.every() if self._anchors else ())
        after = 0
        while True:
            async with self._uow() as uow:
                batch = await uow.audit_log.batch_after(after, VERIFY_BATCH)
            if not batch:
                break
            for entry in batch:
                walk.add(entry)
            after = batch[-1].sequence
        verification = walk.finish()
        found = verification.first_break
        if found is not None and not domain.may_see(scope, found.organization_id):
            verification = replace(verification, first_break=replace(found, entry_id="", organization_id=""))
        if found is not None:
            log.warning("audit trail verification failed: %s at sequence %d", found.kind, found.sequence)
        return verification

    async def anchor_audit_trail(self, principal: Principal) -> Anchor:
        """Anchors the head now (system admins; the identity process does it periodically)."""
        principal.require_any_role("system_admin")
        anchor = await self.write_audit_anchor()
        if anchor is None:
            raise PreconditionError("The audit trail is empty: there is nothing to anchor", detail="AUDIT_TRAIL_EMPTY")
        return anchor

    async def write_audit_anchor(self) -> Anchor | None:
        """Writes the head (sequence, hash, time) to the log and to object storage, unless it is the
        latest anchor already; None for an empty trail. One writer at a time across replicas."""
        if self._anchors is None:
            raise PreconditionError("No object storage is configured for audit anchors", detail="NO_ANCHOR_STORAGE")
        async with self._uow() as uow:
            await uow.serialize("audit-anchor")
            sequence, head = await uow.audit_log.last_link()
            if sequence == 0:
                return None
            latest = await self._anchors.latest()
            if latest is not None and latest.sequence >= sequence:
                # Anchors only move forward: one is never overwritten, so a trail cut back below its
                # latest anchor stays detectable (verification reports it).
                if (latest.sequence, latest.hash) != (sequence, head):
                    log.error("audit trail head (sequence %d) is behind or off its latest anchor (sequence %d)",
                              sequence, latest.sequence)
                return latest
            anchor = Anchor(sequence, head, self._now(), previous_sequence=latest.sequence if latest else 0)
            await self._anchors.write(anchor)
        log.info("audit trail anchored at sequence %d: %s (%s)", sequence, head.hex(), anchor.object_key)
        return anchor

    async def audit_trail(self) -> list[AuditEntry]:
        """The whole trail in order (tests; verification walks it in batches instead)."""
        async with self._uow() as uow:
            return await uow.audit_log.everything()
