"""Preference rows: the switches users set (absent = the vocabulary's default) and their digest."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notification.domain.preferences import Preferences, Setting, Switch
from services.notification.domain.vocabulary import DEFAULT_DIGEST, Channel, EmailDigest, NotificationType
from services.notification.store.tables import preferences, user_settings

_p = preferences.c
_s = user_settings.c


class PreferenceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def of(self, user_ids: Iterable[str]) -> dict[str, Preferences]:
        """Each user's preferences (defaults for users who never chose)."""
        users = sorted(set(user_ids))
        if not users:
            return {}
        chosen: dict[str, dict[Switch, bool]] = {user: {} for user in users}
        rows = await self._session.execute(sa.select(preferences).where(_p.user_id.in_(users)))
        for row in rows:
            if row.notification_type in NotificationType.__members__ and row.channel in Channel.__members__:
                chosen[row.user_id][(NotificationType(row.notification_type), Channel(row.channel))] = row.enabled
        rows = await self._session.execute(sa.select(_s.user_id, _s.email_digest).where(_s.user_id.in_(users)))
        digests = {row.user_id: row.email_digest for row in rows}
        return {user: Preferences(chosen[user], EmailDigest(digests.get(user, DEFAULT_DIGEST.value))) for user in users}

    async def set(self, user_id: str, settings: Iterable[Setting]) -> None:
        for setting in settings:
            insert = pg_insert(preferences).values(
                user_id=user_id,
                notification_type=setting.type.value,
                channel=setting.channel.value,
                enabled=setting.enabled,
            )
            await self._session.execute(
                insert.on_conflict_do_update(
                    index_elements=[_p.user_id, _p.notification_type, _p.channel],
                    set_={"enabled": insert.excluded.enabled, "updated_at": sa.func.now()},
                )
            )

    async def reset(self, user_id: str) -> None:
        await self._session.execute(preferences.delete().where(_p.user_id == user_id))

    async def set_digest(self, user_id: str, digest: EmailDigest) -> None:
        insert = pg_insert(user_settings).values(user_id=user_id, email_digest=digest.value)
        await self._session.execute(
            insert.on_conflict_do_update(
                index_elements=[_s.user_id],
                set_={"email_digest": insert.excluded.email_digest, "updated_at": sa.func.now()},
            )
        )
