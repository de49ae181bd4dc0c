"""The audit trail: a bus consumer that appends every service's AuditRecorded events, hash-chained."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC
from typing import Any

import sqlalchemy as sa
from molbridge.events.v1.audit_pb2 import AuditOutcome, AuditRecorded
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from nats.aio.msg import Msg
from sqlalchemy.dialects.postgresql import insert

from bus.consumer import PoisonError
from services.identity.domain import GENESIS_HASH, AuditEntry, audit_hash
from services.identity.store import audit_log
from services.runtime.db import UnitOfWork

CONSUMER_NAME = "identity-audit-trail"


class AuditTrail:
    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    async def handle(self, envelope: EventEnvelope, msg: Msg | None = None) -> None:
        event = AuditRecorded()
        if not envelope.payload.Unpack(event):
            raise PoisonError(f"not an AuditRecorded event: {envelope.payload.type_url}")
        async with self._uow() as session:
            # One writer at a time keeps the chain linear; a redelivered event finds its id and stops.
            await session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("identity:audit"))))
            if await session.scalar(sa.select(audit_log.c.id).where(audit_log.c.id == envelope.id)):
                return
            last = (
                await session.execute(
                    sa.select(audit_log.c.sequence, audit_log.c.hash).order_by(audit_log.c.sequence.desc()).limit(1)
                )
            ).first()
            entry = AuditEntry(
                id=envelope.id,
                sequence=(last.sequence + 1) if last else 1,
                occurred_at=envelope.occurred_at.ToDatetime(tzinfo=UTC),
                source=envelope.source,
                action=event.action,
                outcome=AuditOutcome.Name(event.outcome).removeprefix("AUDIT_OUTCOME_"),
                actor_id=envelope.actor_id,
                organization_id=envelope.organization_id,
                target_type=event.target_type,
                target_id=event.target_id,
                client_address=event.client_address,
                request_id=event.request_id,
                details=dict(event.details),
            )
            entry = replace(entry, hash=audit_hash(last.hash if last else GENESIS_HASH, entry))
            await session.execute(insert(audit_log).values(**_row(entry)).on_conflict_do_nothing())


def _row(entry: AuditEntry) -> dict[str, Any]:
    return {field: getattr(entry, field) for field in entry.__dataclass_fields__}


def entry_of(row: Any) -> AuditEntry:
    return AuditEntry(**{field: getattr(row, field) for field in AuditEntry.__dataclass_fields__})
