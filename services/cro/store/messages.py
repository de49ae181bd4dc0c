"""Message rows ↔ domain Message: the thread (add, pages, read marks, unread counts; service/messages.py).

A thread is ordered by `messages.seq` (an identity column): ids are random, seq is not. A read mark is the
highest seq a user has read in a thread; it only moves forward (`GREATEST` in the upsert), so marking an
older message never un-reads a newer one. Unread = messages by others after the caller's mark.

`visible_to(principal)` is the thread's audience in SQL: the pharma organization always, the CRO
organization once the submission is past DRAFT (as the domain's Submission says), a system_admin every
thread. Reads for a caller go through it, so another organization's thread does not exist (404).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.cro.domain.submissions import Message
from services.cro.domain.vocabulary import Side, SubmissionStatus
from services.cro.store.tables import message_reads, messages, submissions
from services.runtime.auth import Principal
from services.runtime.db import canonical_uuid
from services.runtime.pagination import PageRequest

_m = messages.c
_r = message_reads.c
_s = submissions.c


@dataclass(frozen=True)
class UnreadCount:
    submission_id: str
    unread: int


def visible_to(principal: Principal) -> sa.ColumnElement[bool]:
    """The submissions whose thread `principal` may read."""
    if principal.is_system_admin:
        return sa.true()
    organization = canonical_uuid(principal.organization_id)
    if organization is None:
        return sa.false()
    return sa.or_(
        _s.organization_id == organization,
        sa.and_(_s.cro_organization_id == organization, _s.status != SubmissionStatus.DRAFT.value),
    )


def _message(row: sa.Row) -> Message:  # type: ignore[type-arg]
    return Message(
        id=str(row.id),
        submission_id=str(row.submission_id),
        author=row.author_id,
        side=Side(row.side) if row.side else None,
        text=row.text,
        document_id=row.document_id,
        change_request=row.change_request,
        at=row.created_at,
    )


_COLUMNS = (_m.id, _m.submission_id, _m.author_id, _m.side, _m.text, _m.document_id, _m.change_request, _m.created_at)


class MessageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, message: Message) -> int:
        """Stores the message; answers its place in the thread (`seq`, increasing)."""
        seq = await self._session.scalar(
            sa.insert(messages)
            .values(
                id=message.id,
                submission_id=message.submission_id,
                author_id=message.author,
                side=message.side.value if message.side else "",
                text=message.text,
                document_id=message.document_id,
                change_request=message.change_request,
                created_at=message.at,
            )
            .returning(messages.c.seq)
        )
        return int(seq or 0)

    async def page(self, submission_id: str, page: PageRequest) -> tuple[list[Message], int]:
        """One page of the thread, oldest first, and the thread's length."""
        rows = await self._session.execute(
            sa.select(*_COLUMNS)
            .where(_m.submission_id == submission_id)
            .order_by(_m.seq)
            .offset(page.offset)
            .limit(page.page_size)
        )
        total = await self._session.scalar(
            sa.select(sa.func.count()).select_from(messages).where(_m.submission_id == submission_id)
        )
        return [_message(row) for row in rows], int(total or 0)

    async def seq_of(self, submission_id: str, message_id: str) -> int | None:
        """Where `message_id` stands in the thread; None when it is not a message of this thread."""
        message = canonical_uuid(message_id)
        if message is None:
            return None
        return await self._session.scalar(
            sa.select(_m.seq).where(_m.submission_id == submission_id, _m.id == message)
        )

    async def latest_seq(self, submission_id: str) -> int:
        latest = await self._session.scalar(sa.select(sa.func.max(_m.seq)).where(_m.submission_id == submission_id))
        return int(latest or 0)

    async def after(self, submission_id: str, seq: int) -> list[tuple[int, Message]]:
        """The thread's messages after position `seq`, oldest first, with their positions."""
        rows = await self._session.execute(
            sa.select(_m.seq, *_COLUMNS).where(_m.submission_id == submission_id, _m.seq > seq).order_by(_m.seq)
        )
        return [(row.seq, _message(row)) for row in rows]

    async def visible_message(self, principal: Principal, message_id: str) -> tuple[int, Message] | None:
        """A message by id with its position, if `principal` may read its thread (checked on every read)."""
        message = canonical_uuid(message_id)
        if message is None:
            return None
        row = (
            await self._session.execute(
                sa.select(_m.seq, *_COLUMNS)
                .join(submissions, _s.id == _m.submission_id)
                .where(_m.id == message, visible_to(principal))
            )
        ).first()
        return None if row is None else (row.seq, _message(row))

    async def mark_read(self, submission_id: str, user_id: str, seq: int) -> None:
        """Moves the user's mark forward to `seq` (never back)."""
        statement = pg_insert(message_reads).values(submission_id=submission_id, user_id=user_id, last_read_seq=seq)
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=[_r.submission_id, _r.user_id],
                set_={
                    "last_read_seq": sa.func.greatest(_r.last_read_seq, statement.excluded.last_read_seq),
                    "read_at": sa.func.now(),
                },
            )
        )

    async def unread(self, submission_id: str, user_id: str) -> int:
        counts = await self._unread(sa.and_(_m.submission_id == submission_id), user_id)
        return counts[0].unread if counts else 0

    async def unread_counts(self, principal: Principal) -> list[UnreadCount]:
        """The caller's unread messages per thread it may read (threads with none left out)."""
        return await self._unread(visible_to(principal), principal.subject)

    async def _unread(self, where: sa.ColumnElement[bool], user_id: str) -> list[UnreadCount]:
        mark = (
            sa.select(_r.last_read_seq)
            .where(_r.submission_id == _m.submission_id, _r.user_id == user_id)
            .scalar_subquery()
        )
        rows = await self._session.execute(
            sa.select(_m.submission_id, sa.func.count().label("unread"))
            .join(submissions, _s.id == _m.submission_id)
            .where(where, _m.author_id != user_id, _m.seq > sa.func.coalesce(mark, 0))
            .group_by(_m.submission_id)
            .order_by(_m.submission_id)
        )
        return [UnreadCount(str(row.submission_id), int(row.unread)) for row in rows]
