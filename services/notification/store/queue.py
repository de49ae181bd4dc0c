"""The delivery work a notification causes, queued in its transaction for the delivery worker: one
email per notification (`email_deliveries`, unique per notification) and one webhook delivery per event
and subscribed endpoint of the organizations concerned (`webhook_deliveries`, unique per event and
endpoint). Both start PENDING and due at once; the worker owns them from there."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notification.domain.vocabulary import DeliveryStatus, EmailDigest, NotificationType
from services.notification.store.tables import email_deliveries, webhook_deliveries, webhooks

_w = webhooks.c


class DeliveryQueue:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def email(
        self, notification_id: str, recipient_id: str, email: str, kind: NotificationType, digest: EmailDigest
    ) -> None:
        await self._session.execute(
            pg_insert(email_deliveries)
            .values(
                id=str(uuid.uuid4()),
                notification_id=notification_id,
                recipient_id=recipient_id,
                email=email,
                notification_type=kind.value,
                digest=digest.value,
                status=DeliveryStatus.PENDING.value,
                next_attempt_at=sa.func.now(),
            )
            .on_conflict_do_nothing(index_elements=[email_deliveries.c.notification_id])
        )

    async def subscribed_webhooks(self, organizations: Iterable[str], kind: NotificationType) -> list[tuple[str, str]]:
        """(webhook id, organization) of the active endpoints of these organizations that take `kind`."""
        wanted = sorted(set(organizations) - {""})
        if not wanted:
            return []
        rows = await self._session.execute(
            sa.select(_w.id, _w.organization_id).where(
                _w.organization_id.in_(wanted),
                _w.active,
                sa.or_(sa.func.cardinality(_w.event_types) == 0, sa.literal(kind.value) == sa.any_(_w.event_types)),
            )
        )
        return [(str(row.id), row.organization_id) for row in rows]

    async def webhook(
        self, webhook_id: str, organization_id: str, event_id: str, kind: NotificationType, payload: dict[str, Any]
    ) -> None:
        await self._session.execute(
            pg_insert(webhook_deliveries)
            .values(
                id=str(uuid.uuid4()),
                webhook_id=webhook_id,
                organization_id=organization_id,
                event_id=event_id,
                event_type=kind.value,
                payload=payload,
                status=DeliveryStatus.PENDING.value,
                next_attempt_at=sa.func.now(),
            )
            .on_conflict_do_nothing(constraint="webhook_deliveries_event_webhook")
        )
