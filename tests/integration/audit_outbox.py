"""The AuditRecorded events a service wrote to its outbox, with who and which organization they belong to
(the envelope's), for tests that check a use case's audit trail. Filtered by target: other tests' events
may be in the same outbox."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from sqlalchemy.ext.asyncio import AsyncEngine

from bus import event_subject, outbox_table, unpack


@dataclass(frozen=True)
class Audited:
    event: AuditRecorded
    organization_id: str
    actor_id: str

    @property
    def action(self) -> str:
        return self.event.action

    @property
    def details(self) -> dict[str, str]:
        return dict(self.event.details)


async def audited(engine: AsyncEngine, schema: str, source: str, target_id: str) -> list[Audited]:
    """The audit events about `target_id` in the outbox of `schema`, in the order they were written."""
    return [a for a in await audit_trail(engine, schema, source) if a.event.target_id == target_id]


async def audited_actions(engine: AsyncEngine, schema: str, source: str, action: str) -> list[Audited]:
    """The audit events of one action (for targets a test cannot know beforehand)."""
    return [a for a in await audit_trail(engine, schema, source) if a.action == action]


async def audit_trail(engine: AsyncEngine, schema: str, source: str) -> list[Audited]:
    """Every audit event in the outbox of `schema`, in the order they were written."""
    outbox = outbox_table(schema)
    async with engine.connect() as connection:
        payloads = await connection.scalars(
            sa.select(outbox.c.payload).where(outbox.c.subject == event_subject(source, AuditRecorded))
        )
        envelopes = sorted((EventEnvelope.FromString(p) for p in payloads), key=lambda e: e.occurred_at.ToNanoseconds())
    return [Audited(unpack(e, AuditRecorded), e.organization_id, e.actor_id) for e in envelopes]
