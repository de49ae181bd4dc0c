"""Webhook endpoints and their deliveries ↔ rows; the delivery worker's claim and record.

Claiming (several worker replicas, restarts): due rows are selected `FOR UPDATE SKIP LOCKED` and leased by
moving `next_attempt_at` past the attempt's timeout in the same short transaction; the POST happens after
the commit, and its outcome is recorded only if the row is still the claimed attempt (`attempts` as
claimed, not DELIVERED). A worker that dies mid-attempt leaves the row due again when the lease ends: a
delivery is never lost, a DELIVERED one never sent again. At most `per_endpoint` rows of one endpoint are
claimed at a time, so one slow endpoint's backlog cannot take every slot.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.notification.domain.vocabulary import DeliveryStatus
from services.notification.domain.webhooks import AttemptResult, Decision, Delivery, Webhook
from services.notification.store.tables import webhook_deliveries, webhooks
from services.runtime.db import canonical_uuid
from services.runtime.pagination import PageRequest

_w = webhooks.c
_d = webhook_deliveries.c
UNSENT = (DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value)


@dataclass(frozen=True)
class StoredSecrets:
    current: str  # sealed
    previous: str | None  # sealed
    previous_expires_at: datetime | None


@dataclass(frozen=True)
class ClaimedDelivery:
    id: str
    webhook_id: str
    url: str
    payload: dict[str, Any]
    attempt: int  # this attempt's number (1-based)
    window_started_at: datetime  # the retry window runs from here (queued or redelivered)
    secrets: StoredSecrets


def outcome_values(
    status: DeliveryStatus, now: datetime, *, next_attempt_at: datetime | None, error: str
) -> dict[str, Any]:
    """The columns an attempt's outcome sets on a delivery row (webhook or email)."""
    values: dict[str, Any] = {
        "status": status.value,
        "next_attempt_at": next_attempt_at,
        "last_attempt_at": now,
        "last_error": error,
        "updated_at": now,
    }
    if status is DeliveryStatus.DELIVERED:
        values["delivered_at"] = now
    elif status is DeliveryStatus.DEAD:
        values["dead_at"] = now
    return values


def _webhook(row: Any) -> Webhook:
    return Webhook(
        id=str(row.id),
        organization_id=row.organization_id,
        url=row.url,
        event_types=tuple(row.event_types or ()),
        description=row.description,
        active=row.active,
        secret_hint=row.secret_hint,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        secret_rotated_at=row.secret_rotated_at,
    )


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=str(row.id),
        webhook_id=str(row.webhook_id),
        event_id=row.event_id,
        event_type=row.event_type,
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        next_attempt_at=row.next_attempt_at,
        last_attempt_at=row.last_attempt_at,
        delivered_at=row.delivered_at,
        dead_at=row.dead_at,
        created_at=row.created_at,
        test=row.test,
    )


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # ---------------------------------------------------------------- endpoints

    async def add(self, webhook: Webhook, sealed_secret: str) -> None:
        await self._session.execute(
            webhooks.insert().values(
                id=webhook.id,
                organization_id=webhook.organization_id,
                url=webhook.url,
                event_types=list(webhook.event_types),
                description=webhook.description,
                active=webhook.active,
                secret_encrypted=sealed_secret,
                secret_hint=webhook.secret_hint,
                created_by=webhook.created_by,
                created_at=webhook.created_at,
                updated_at=webhook.updated_at,
            )
        )

    async def get(self, organization_id: str, webhook_id: str, *, lock: bool = False) -> Webhook | None:
        """The endpoint when it belongs to `organization_id` (another organization's does not exist)."""
        key = canonical_uuid(webhook_id)
        if key is None:
            return None
        query = sa.select(webhooks).where(_w.id == key, _w.organization_id == organization_id)
        row = (await self._session.execute(query.with_for_update() if lock else query)).first()
        return _webhook(row) if row else None

    async def secrets_of(self, webhook_id: str) -> StoredSecrets:
        row = (
            await self._session.execute(
                sa.select(_w.secret_encrypted, _w.previous_secret_encrypted, _w.previous_secret_expires_at).where(
                    _w.id == webhook_id
                )
            )
        ).one()
        return StoredSecrets(row.secret_encrypted, row.previous_secret_encrypted, row.previous_secret_expires_at)

    async def listing(self, organization_id: str, page: PageRequest) -> tuple[list[Webhook], int]:
        where = _w.organization_id == organization_id
        total = await self._session.scalar(sa.select(sa.func.count()).select_from(webhooks).where(where)) or 0
        rows = await self._session.execute(
            sa.select(webhooks)
            .where(where)
            .order_by(_w.created_at.desc(), _w.id)
            .limit(page.page_size)
            .offset(page.offset)
        )
        return [_webhook(row) for row in rows], total

    async def save(self, webhook: Webhook) -> None:
        await self._session.execute(
            webhooks.update()
            .where(_w.id == webhook.id)
            .values(
                url=webhook.url,
                event_types=list(webhook.event_types),
                description=webhook.description,
                active=webhook.active,
                updated_at=webhook.updated_at,
            )
        )

    async def rotate_secret(self, webhook: Webhook, sealed_secret: str, previous_expires_at: datetime) -> None:
        """The new secret becomes current; the old one stays valid (both signatures sent) until
        `previous_expires_at`."""
        await self._session.execute(
            webhooks.update()
            .where(_w.id == webhook.id)
            .values(
                previous_secret_encrypted=_w.secret_encrypted,
                previous_secret_expires_at=previous_expires_at,
                secret_encrypted=sealed_secret,
                secret_hint=webhook.secret_hint,
                secret_rotated_at=webhook.secret_rotated_at,
                updated_at=webhook.updated_at,
            )
        )

    async def delete(self, webhook_id: str) -> None:
        await self._session.execute(webhooks.delete().where(_w.id == webhook_id))  # deliveries cascade

    # ---------------------------------------------------------------- the delivery log

    async def deliveries(
        self, webhook_id: str, status: DeliveryStatus | None, page: PageRequest
    ) -> tuple[list[Delivery], int]:
        where = sa.and_(_d.webhook_id == webhook_id, *([_d.status == status.value] if status else []))
        total = await self._session.scalar(sa.select(sa.func.count()).select_from(webhook_deliveries).where(where)) or 0
        rows = await self._session.execute(
            sa.select(webhook_deliveries)
            .where(where)
            .order_by(_d.created_at.desc(), _d.id)
            .limit(page.page_size)
            .offset(page.offset)
        )
        return [_delivery(row) for row in rows], total

    async def delivery(self, webhook_id: str, delivery_id: str, *, lock: bool = False) -> Delivery | None:
        key = canonical_uuid(delivery_id)
        if key is None:
            return None
        query = sa.select(webhook_deliveries).where(_d.id == key, _d.webhook_id == webhook_id)
        row = (await self._session.execute(query.with_for_update() if lock else query)).first()
        return _delivery(row) if row else None

    async def add_delivery(
        self,
        *,
        delivery_id: str,
        webhook: Webhook,
        event_id: str,
        event_type: str,
        payload: dict[str, Any],
        test: bool,
        now: datetime,
    ) -> Delivery:
        await self._session.execute(
            webhook_deliveries.insert().values(
                id=delivery_id,
                webhook_id=webhook.id,
                organization_id=webhook.organization_id,
                event_id=event_id,
                event_type=event_type,
                payload=payload,
                test=test,
                status=DeliveryStatus.PENDING.value,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )
        found = await self.delivery(webhook.id, delivery_id)
        assert found is not None
        return found

    async def requeue(self, delivery_id: str, now: datetime) -> None:
        """Back to PENDING with a fresh retry window (the window runs from `created_at`)."""
        await self._session.execute(
            webhook_deliveries.update()
            .where(_d.id == delivery_id)
            .values(
                status=DeliveryStatus.PENDING.value,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                delivered_at=None,
                dead_at=None,
                last_error="",
                updated_at=now,
            )
        )

    # ---------------------------------------------------------------- the worker's claim and record

    async def claim_due(
        self, now: datetime, *, limit: int, per_endpoint: int, busy: Collection[str], lease: timedelta
    ) -> list[ClaimedDelivery]:
        """Up to `limit` due deliveries of active endpoints, at most `per_endpoint` per endpoint, none of
        the `busy` endpoints (this process already has as many in flight as it allows), leased until
        now + `lease`."""
        due = sa.and_(_d.status.in_(UNSENT), _d.next_attempt_at <= now)
        ranked = (
            sa.select(
                _d.id,
                sa.func.row_number()
                .over(partition_by=_d.webhook_id, order_by=(_d.next_attempt_at, _d.id))
                .label("rank"),
            )
            .join(webhooks, _w.id == _d.webhook_id)
            .where(due, _w.active.is_(True), *([_d.webhook_id.not_in(list(busy))] if busy else []))
            .subquery()
        )
        candidates = sa.select(ranked.c.id).where(ranked.c.rank <= per_endpoint)
        rows = (
            await self._session.execute(
                sa.select(
                    _d.id,
                    _d.webhook_id,
                    _d.payload,
                    _d.attempts,
                    _d.created_at,
                    _w.url,
                    _w.secret_encrypted,
                    _w.previous_secret_encrypted,
                    _w.previous_secret_expires_at,
                )
                .join(webhooks, _w.id == _d.webhook_id)
                .where(_d.id.in_(candidates), due)  # still due once locked (another replica may have sent it)
                .order_by(_d.next_attempt_at, _d.id)
                .limit(limit)
                .with_for_update(of=webhook_deliveries, skip_locked=True)
            )
        ).all()
        if not rows:
            return []
        await self._session.execute(
            webhook_deliveries.update()
            .where(_d.id.in_([row.id for row in rows]))
            .values(attempts=_d.attempts + 1, next_attempt_at=now + lease, updated_at=now)
        )
        return [
            ClaimedDelivery(
                id=str(row.id),
                webhook_id=str(row.webhook_id),
                url=row.url,
                payload=dict(row.payload),
                attempt=row.attempts + 1,
                window_started_at=row.created_at,
                secrets=StoredSecrets(
                    row.secret_encrypted, row.previous_secret_encrypted, row.previous_secret_expires_at
                ),
            )
            for row in rows
        ]

    async def record_attempt(
        self, claimed: ClaimedDelivery, result: AttemptResult, decision: Decision, now: datetime
    ) -> bool:
        """The attempt's outcome, if the row is still this attempt (not redelivered or sent meanwhile)."""
        values = outcome_values(
            decision.status,
            now,
            next_attempt_at=decision.next_attempt_at,
            error="" if result.succeeded else result.describe(),
        )
        values["last_status_code"] = result.status_code
        updated = await self._session.execute(
            webhook_deliveries.update()
            .where(_d.id == claimed.id, _d.attempts == claimed.attempt, _d.status.in_(UNSENT))
            .values(**values)
        )
        return bool(getattr(updated, "rowcount", 0))
