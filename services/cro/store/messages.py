"""Message rows ↔ domain Message. Minimal here (REQUEST_CHANGES stores its message); the thread's
reads, unread counts and watching build on the same tables."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.cro.domain.submissions import Message
from services.cro.store.tables import messages


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
