"""Users and their credentials: the only SQL about accounts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.domain import Account, User
from services.identity.store.tables import organizations, password_history, users
from services.runtime.db import canonical_uuid, execute_unique
from services.runtime.errors import ConflictError, NotFoundError
from services.runtime.pagination import PageRequest

USER_SORT_KEYS = {"email": users.c.email, "full_name": users.c.full_name, "created_at": users.c.created_at}
_WITH_KIND = sa.select(users, organizations.c.kind.label("organization_kind")).join(organizations)


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, user_id: str, *, lock: bool = False) -> Account:
        account = await self._first(_WITH_KIND.where(users.c.id == canonical_uuid(user_id)), lock=lock)
        if account is None:
            raise NotFoundError("User not found")
        return account

    async def by_email(self, email: str, *, lock: bool = False) -> Account | None:
        return await self._first(_WITH_KIND.where(users.c.email == email), lock=lock)

    async def _first(self, query: sa.Select[Any], *, lock: bool) -> Account | None:
        row = (await self._session.execute(query.with_for_update(of=users) if lock else query)).first()
        return _account(row) if row is not None else None

    async def exist(self) -> bool:
        return bool(await self._session.scalar(sa.select(sa.func.count()).select_from(users)))

    async def add(
        self, user_id: str, email: str, full_name: str, organization_id: str, roles: Sequence[str],
        password_hash: str,
    ) -> None:
        await execute_unique(
            self._session,
            users.insert().values(
                id=user_id, email=email, full_name=full_name, organization_id=organization_id,
                roles=list(roles), password_hash=password_hash,
            ),
            ConflictError(f"A user with email {email} already exists"),
        )
        await self._session.execute(password_history.insert().values(user_id=user_id, password_hash=password_hash))

    async def update(self, user_id: str, **changes: Any) -> None:
        """Sets columns of one user (`full_name`, `roles`, `active`, `failed_logins`, `locked_until`,
        `mfa_secret`, `mfa_enabled`, `mfa_last_step`, `last_login_at`, `updated_at`)."""
        await self._session.execute(users.update().where(users.c.id == user_id).values(**changes))

    async def set_password(self, user_id: str, password_hash: str, now: datetime) -> None:
        await self.update(user_id, password_hash=password_hash, failed_logins=0, locked_until=None, updated_at=now)
        await self._session.execute(password_history.insert().values(user_id=user_id, password_hash=password_hash))

    async def recent_password_hashes(self, user_id: str, depth: int) -> list[str]:
        return list(
            await self._session.scalars(
                sa.select(password_history.c.password_hash)
                .where(password_history.c.user_id == user_id)
                .order_by(password_history.c.id.desc())
                .limit(depth)
            )
        )

    async def ids(self) -> list[str]:
        """Every user's id, oldest first."""
        found = await self._session.scalars(sa.select(users.c.id).order_by(users.c.created_at, users.c.id))
        return [str(user_id) for user_id in found]

    async def list(self, organization_id: str, page: PageRequest, sort: str) -> tuple[list[User], int]:
        """A page of one organization's users; `sort` is a key of USER_SORT_KEYS, '-' for descending."""
        column = USER_SORT_KEYS[sort.lstrip("-")]
        order = column.desc() if sort.startswith("-") else column.asc()
        query = _WITH_KIND.where(users.c.organization_id == canonical_uuid(organization_id))
        total = await self._session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
        rows = await self._session.execute(query.order_by(order, users.c.id).limit(page.page_size).offset(page.offset))
        return [_account(r).user for r in rows], total


def _account(row: Any) -> Account:
    return Account(
        user=User(
            id=row.id, email=row.email, full_name=row.full_name, organization_id=row.organization_id,
            roles=tuple(row.roles), active=row.active, mfa_enabled=row.mfa_enabled, locked_until=row.locked_until,
            created_at=row.created_at, updated_at=row.updated_at, last_login_at=row.last_login_at,
        ),
        organization_kind=row.organization_kind, password_hash=row.password_hash, failed_logins=row.failed_logins,
        mfa_secret=row.mfa_secret, mfa_last_step=row.mfa_last_step,
    )
