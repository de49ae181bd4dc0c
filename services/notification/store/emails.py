"""Queued notification emails ↔ rows; the delivery worker's claim and record (the same lease scheme as
store/webhooks.py: `FOR UPDATE SKIP LOCKED`, `next_attempt_at` moved past the send's timeout, the outcome
recorded only for the claimed attempt).

An immediate email (digest OFF) is one row. A digest gathers every waiting row of one recipient and
period queued before the period's cutoff; its rows are claimed, sent and recorded together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.notification.domain.emails import EmailItem
from services.notification.domain.vocabulary import DeliveryStatus, EmailDigest
from services.notification.store.tables import directory_users, email_deliveries, notifications
from services.notification.store.webhooks import outcome_values

_e = email_deliveries.c
_n = notifications.c
_u = directory_users.c
UNSENT = (DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value)


@dataclass(frozen=True)
class ClaimedEmail:
    """One email to send: a single notification, or a digest's several (`items`, oldest first)."""

    ids: tuple[str, ...]
    attempts: tuple[int, ...]  # each row's attempt number as claimed
    recipient_id: str
    email: str
    recipient_name: str
    reachable: bool  # the recipient is still an active user (else the email is dropped, DEAD)
    digest: str
    items: tuple[EmailItem, ...]

    @property
    def attempt(self) -> int:
        return max(self.attempts)


def _item(row: Any) -> EmailItem:
    return EmailItem(
        notification_type=row.type,
        title=row.title,
        body=row.body,
        link_path=row.link,
        occurred_at=row.occurred_at or row.created_at,
    )


class EmailRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    def _rows(self) -> sa.Select[Any]:
        return (
            sa.select(
                _e.id,
                _e.recipient_id,
                _e.email,
                _e.digest,
                _e.attempts,
                _n.type,
                _n.title,
                _n.body,
                _n.link,
                _n.occurred_at,
                _n.created_at,
                sa.func.coalesce(_u.display_name, "").label("display_name"),
                sa.func.coalesce(_u.active & sa.not_(_u.deleted), sa.true()).label("reachable"),
            )
            .join(notifications, _n.id == _e.notification_id)
            .outerjoin(directory_users, _u.user_id == _e.recipient_id)
        )

    async def _lease(self, rows: Sequence[Any], now: datetime, lease: timedelta) -> None:
        await self._session.execute(
            email_deliveries.update()
            .where(_e.id.in_([row.id for row in rows]))
            .values(attempts=_e.attempts + 1, next_attempt_at=now + lease, updated_at=now)
        )

    async def claim_immediate(self, now: datetime, *, limit: int, lease: timedelta) -> list[ClaimedEmail]:
        due = sa.and_(
            _e.digest == EmailDigest.OFF.value,
            _e.status.in_(UNSENT),
            sa.or_(_e.next_attempt_at.is_(None), _e.next_attempt_at <= now),
        )
        rows = (
            await self._session.execute(
                self._rows()
                .where(due)
                .order_by(_e.created_at, _e.id)
                .limit(limit)
                .with_for_update(of=email_deliveries, skip_locked=True)
            )
        ).all()
        if not rows:
            return []
        await self._lease(rows, now, lease)
        return [
            ClaimedEmail(
                ids=(str(row.id),),
                attempts=(row.attempts + 1,),
                recipient_id=row.recipient_id,
                email=row.email,
                recipient_name=row.display_name,
                reachable=bool(row.reachable),
                digest=row.digest,
                items=(_item(row),),
            )
            for row in rows
        ]

    async def claim_digests(
        self, now: datetime, cutoffs: dict[str, datetime], *, limit: int, lease: timedelta
    ) -> list[ClaimedEmail]:
        """Up to `limit` digests: per recipient and period, every waiting row queued before the period's
        cutoff (`cutoffs`: digest → cutoff)."""
        waiting = sa.and_(_e.status.in_(UNSENT), sa.or_(_e.next_attempt_at.is_(None), _e.next_attempt_at <= now))
        in_period = sa.or_(
            *(sa.and_(_e.digest == digest, _e.created_at < cutoff) for digest, cutoff in cutoffs.items())
        )
        recipients = (
            await self._session.execute(
                sa.select(_e.recipient_id, _e.digest)
                .where(waiting, in_period)
                .group_by(_e.recipient_id, _e.digest)
                .order_by(sa.func.min(_e.created_at))
                .limit(limit)
            )
        ).all()
        claimed: list[ClaimedEmail] = []
        for recipient in recipients:
            rows = (
                await self._session.execute(
                    self._rows()
                    .where(
                        waiting,
                        _e.recipient_id == recipient.recipient_id,
                        _e.digest == recipient.digest,
                        _e.created_at < cutoffs[recipient.digest],
                    )
                    .order_by(_e.created_at, _e.id)
                    .with_for_update(of=email_deliveries, skip_locked=True)
                )
            ).all()
            if not rows:
                continue  # another replica has it
            await self._lease(rows, now, lease)
            first = rows[0]
            claimed.append(
                ClaimedEmail(
                    ids=tuple(str(row.id) for row in rows),
                    attempts=tuple(row.attempts + 1 for row in rows),
                    recipient_id=first.recipient_id,
                    email=rows[-1].email,  # the newest address
                    recipient_name=first.display_name,
                    reachable=bool(first.reachable),
                    digest=first.digest,
                    items=tuple(_item(row) for row in rows),
                )
            )
        return claimed

    async def record(
        self,
        claimed: ClaimedEmail,
        status: DeliveryStatus,
        now: datetime,
        *,
        next_attempt_at: datetime | None = None,
        error: str = "",
    ) -> int:
        """The send's outcome for every row of the email that is still the claimed attempt."""
        values = outcome_values(status, now, next_attempt_at=next_attempt_at, error=error)
        recorded = 0
        for row_id, attempt in zip(claimed.ids, claimed.attempts, strict=True):
            result = await self._session.execute(
                email_deliveries.update()
                .where(_e.id == row_id, _e.attempts == attempt, _e.status.in_(UNSENT))
                .values(**values)
            )
            recorded += int(getattr(result, "rowcount", 0))
        return recorded
