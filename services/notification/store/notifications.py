"""Notification rows ↔ domain Notification: one per source event and recipient (the unique key makes a
redelivered event add nothing), the recipient's list, unread count and read marks.

Every read names the recipient: a notification of someone else does not exist (404). Rows whose
IN_APP switch was off (`in_app` false: kept for the email that refers to them) are never shown.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notification.domain.notices import Notification
from services.notification.domain.vocabulary import NotificationType
from services.notification.store.tables import notifications
from services.runtime.db import canonical_uuid
from services.runtime.pagination import PageRequest

_n = notifications.c


def _notification(row: sa.Row) -> Notification:  # type: ignore[type-arg]
    return Notification(
        id=str(row.id),
        recipient_id=row.recipient_id,
        type=NotificationType(row.type),
        title=row.title,
        body=row.body,
        link=row.link,
        organization_id=row.organization_id,
        subject_type=row.subject_type,
        subject_id=row.subject_id,
        submission_id=row.submission_id,
        event_id=row.event_id,
        occurred_at=row.occurred_at,
        in_app=row.in_app,
        data=dict(row.data),
        created_at=row.created_at,
        read_at=row.read_at,
        seq=row.seq,
    )


def _mine(recipient_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(_n.recipient_id == recipient_id, _n.in_app)


class NotificationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, new: Notification) -> bool:
        """Stores it unless this event already notified this recipient; True when stored now."""
        stored = await self._session.scalar(
            pg_insert(notifications)
            .values(
                id=new.id,
                recipient_id=new.recipient_id,
                type=new.type.value,
                title=new.title,
                body=new.body,
                link=new.link,
                organization_id=new.organization_id,
                subject_type=new.subject_type,
                subject_id=new.subject_id,
                submission_id=new.submission_id,
                event_id=new.event_id,
                occurred_at=new.occurred_at,
                in_app=new.in_app,
                data=new.data,
            )
            .on_conflict_do_nothing(constraint="notifications_event_recipient")
            .returning(_n.id)
        )
        return stored is not None

    async def page(
        self, recipient_id: str, page: PageRequest, *, unread_only: bool, kind: NotificationType | None
    ) -> tuple[list[Notification], int]:
        where = [_mine(recipient_id)]
        if unread_only:
            where.append(_n.read_at.is_(None))
        if kind is not None:
            where.append(_n.type == kind.value)
        total = await self._session.scalar(sa.select(sa.func.count()).select_from(notifications).where(*where))
        rows = await self._session.execute(
            sa.select(notifications).where(*where).order_by(_n.seq.desc()).offset(page.offset).limit(page.page_size)
        )
        return [_notification(row) for row in rows], int(total or 0)

    async def unread(self, recipient_id: str) -> int:
        count = await self._session.scalar(
            sa.select(sa.func.count()).select_from(notifications).where(_mine(recipient_id), _n.read_at.is_(None))
        )
        return int(count or 0)

    async def get(self, recipient_id: str, notification_id: str) -> Notification | None:
        canonical = canonical_uuid(notification_id)
        if canonical is None:
            return None
        row = (
            await self._session.execute(sa.select(notifications).where(_n.id == canonical, _mine(recipient_id)))
        ).first()
        return None if row is None else _notification(row)

    async def mark_read(self, recipient_id: str, notification_id: str) -> Notification | None:
        """Marks it read (a read one keeps its first read time); None when it is not the recipient's."""
        canonical = canonical_uuid(notification_id)
        if canonical is None:
            return None
        await self._session.execute(
            notifications.update()
            .where(_n.id == canonical, _mine(recipient_id), _n.read_at.is_(None))
            .values(read_at=sa.func.now())
        )
        return await self.get(recipient_id, canonical)

    async def mark_all_read(self, recipient_id: str) -> int:
        marked = await self._session.execute(
            notifications.update()
            .where(_mine(recipient_id), _n.read_at.is_(None))
            .values(read_at=sa.func.now())
            .returning(_n.id)
        )
        return len(marked.all())

    async def seq_of(self, recipient_id: str, notification_id: str) -> int | None:
        found = await self.get(recipient_id, notification_id)
        return None if found is None else found.seq

    async def latest_seq(self, recipient_id: str) -> int:
        seq = await self._session.scalar(sa.select(sa.func.max(_n.seq)).where(_n.recipient_id == recipient_id))
        return int(seq or 0)

    async def unread_after(self, recipient_id: str, seq: int) -> list[Notification]:
        rows = await self._session.execute(
            sa.select(notifications)
            .where(_mine(recipient_id), _n.read_at.is_(None), _n.seq > seq)
            .order_by(_n.seq)
            .limit(1000)
        )
        return [_notification(row) for row in rows]
