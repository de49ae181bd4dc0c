"""Exactly-once effects on an at-least-once bus: remember which events a consumer has handled.

    async with uow() as session:
        if await first_delivery(session, consumer="audit-log", event_id=envelope.id, schema="audit"):
            ...apply the effect in the same transaction...

The marker and the effect commit together, so a redelivered event finds the marker and is skipped;
if the transaction fails, neither exists and the redelivery does the work.
"""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bus.tables import processed_events_table


async def first_delivery(session: AsyncSession, consumer: str, event_id: str, *, schema: str) -> bool:
    """True the first time (consumer, event_id) is seen in a committed transaction, False afterwards."""
    table = processed_events_table(schema)
    result = await session.execute(
        insert(table).values(consumer=consumer, event_id=event_id).on_conflict_do_nothing().returning(table.c.event_id)
    )
    return result.first() is not None
