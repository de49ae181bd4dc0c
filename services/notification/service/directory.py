"""The directory: identity's UserChanged → directory_users (the newest `at` wins, so a redelivered or late
event changes nothing)."""

from __future__ import annotations

from datetime import datetime

from services.notification.domain.recipients import Member
from services.notification.store import NotificationTransactions


class Directory:
    def __init__(self, uow: NotificationTransactions) -> None:
        self._uow = uow

    async def user_changed(self, member: Member, organization_kind: str, at: datetime) -> bool:
        """True when the directory took the change (False: it knew a newer state already)."""
        async with self._uow() as uow:
            return await uow.directory.apply(member, organization_kind, at)
