"""The transactional outbox: events are rows in the caller's transaction, published later by the relay.

Either the business change and its events commit together, or neither exists: no event is lost
when the process dies after the commit, and none escapes from a transaction that rolled back.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from opentelemetry import propagate
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from bus.envelope import build_envelope
from bus.subjects import event_subject
from bus.tables import outbox_table


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel on which a schema's relay is woken when rows are committed."""
    return f"molbridge_outbox_{schema}"


def outbox_row(
    *,
    source: str,
    payload: Message,
    organization_id: str = "",
    actor_id: str = "",
    subject: str | None = None,
) -> dict[str, Any]:
    """One outbox row (its `id` is the event id), built now so that it carries the trace context of
    the code that caused the event."""
    event_id = uuid.uuid4()
    occurred_at = datetime.now(UTC)
    envelope = build_envelope(
        event_id=str(event_id),
        source=source,
        payload=payload,
        occurred_at=occurred_at,
        organization_id=organization_id,
        actor_id=actor_id,
    )
    # The writing request's trace context, so the relay's publish span continues that trace.
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return {
        "id": event_id,
        "subject": subject or event_subject(source, payload),
        "payload": envelope.SerializeToString(),
        "headers": headers,
        "created_at": occurred_at,
    }


async def insert_outbox_rows(session: AsyncSession, schema: str, rows: list[dict[str, Any]]) -> None:
    """Adds rows in the caller's transaction and wakes the relay when (and if) it commits."""
    if not rows:
        return
    await session.execute(insert(outbox_table(schema)), rows)
    # PostgreSQL delivers a NOTIFY only when the transaction commits, and folds identical ones of one
    # transaction into one — exactly the "wake the relay on commit" we want.
    await session.execute(select(func.pg_notify(notify_channel(schema), "")))


async def add_event(
    session: AsyncSession,
    *,
    source: str,
    payload: Message,
    organization_id: str = "",
    actor_id: str = "",
    schema: str,
    notify: bool = True,
    subject: str | None = None,
) -> str:
    """Record an event in the caller's transaction (the caller commits); returns the event id.

    `subject` overrides the event subject, for work items (`work_subject(queue)` on the WORK stream).
    Services record through their unit of work (`services.runtime.uow`); this is the bus-level call.
    """
    row = outbox_row(
        source=source, payload=payload, organization_id=organization_id, actor_id=actor_id, subject=subject
    )
    if notify:
        await insert_outbox_rows(session, schema, [row])
    else:
        await session.execute(insert(outbox_table(schema)).values(**row))
    return str(row["id"])
