"""The directory (users as identity announced them) and the submissions' parties: event-carried state.

Both keep the newest state by the event's own time (`changed_at`): an older event arriving late changes
nothing, a redelivered one writes what is already there.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notification.domain.recipients import Member, Parties
from services.notification.store.tables import directory_users, submission_parties

_u = directory_users.c
_p = submission_parties.c


def _member(row: sa.Row) -> Member:  # type: ignore[type-arg]
    return Member(
        user_id=row.user_id,
        organization_id=row.organization_id,
        roles=frozenset(row.roles),
        active=row.active,
        deleted=row.deleted,
        email=row.email,
        display_name=row.display_name,
    )


class DirectoryRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def apply(self, member: Member, organization_kind: str, changed_at: datetime) -> bool:
        """Stores the user as of `changed_at` unless a newer state is already kept; True when it changed."""
        values = {
            "user_id": member.user_id,
            "organization_id": member.organization_id,
            "organization_kind": organization_kind,
            "email": member.email,
            "display_name": member.display_name,
            "roles": sorted(member.roles),
            "active": member.active,
            "deleted": member.deleted,
            "changed_at": changed_at,
        }
        insert = pg_insert(directory_users).values(**values)
        kept = await self._session.scalar(
            insert.on_conflict_do_update(
                index_elements=[_u.user_id],
                set_={**{k: insert.excluded[k] for k in values if k != "user_id"}, "updated_at": sa.func.now()},
                where=_u.changed_at <= insert.excluded.changed_at,
            ).returning(_u.user_id)
        )
        return kept is not None

    async def get(self, user_id: str) -> Member | None:
        row = (await self._session.execute(sa.select(directory_users).where(_u.user_id == user_id))).first()
        return None if row is None else _member(row)

    async def members(self, organizations: Iterable[str]) -> list[Member]:
        """Every known user of these organizations (inactive ones too: the rules leave them out)."""
        wanted = sorted(set(organizations) - {""})
        if not wanted:
            return []
        rows = await self._session.execute(sa.select(directory_users).where(_u.organization_id.in_(wanted)))
        return [_member(row) for row in rows]


class PartiesRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def remember(self, parties: Parties, status: str, changed_at: datetime | None) -> None:
        values = {
            "submission_id": parties.submission_id,
            "organization_id": parties.organization_id,
            "cro_organization_id": parties.cro_organization_id,
            "name": parties.name,
            "created_by": parties.created_by,
            "status": status,
            "changed_at": changed_at,
        }
        insert = pg_insert(submission_parties).values(**values)
        await self._session.execute(
            insert.on_conflict_do_update(
                index_elements=[_p.submission_id],
                set_={**{k: insert.excluded[k] for k in values if k != "submission_id"}, "updated_at": sa.func.now()},
                where=sa.or_(
                    _p.changed_at.is_(None),
                    insert.excluded.changed_at.is_(None),
                    _p.changed_at <= insert.excluded.changed_at,
                ),
            )
        )

    async def get(self, submission_id: str) -> Parties | None:
        row = (
            await self._session.execute(sa.select(submission_parties).where(_p.submission_id == submission_id))
        ).first()
        if row is None:
            return None
        return Parties(row.submission_id, row.organization_id, row.cro_organization_id, row.created_by, row.name)
