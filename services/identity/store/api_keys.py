"""API keys (stored as SHA-256 digests of their secrets)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.domain import ApiKey, KeyHolder
from services.identity.store.sessions import digest
from services.identity.store.tables import api_keys, organizations, users
from services.runtime.db import canonical_uuid
from services.runtime.errors import NotFoundError
from services.runtime.pagination import PageRequest


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(
        self, key_id: str, name: str, organization_id: str, roles: Sequence[str], secret: str, created_by: str
    ) -> None:
        await self._session.execute(
            api_keys.insert().values(
                id=key_id, name=name, organization_id=organization_id, roles=list(roles), prefix=secret[:12],
                secret_hash=digest(secret), created_by=created_by,
            )
        )

    async def get(self, key_id: str) -> ApiKey:
        row = (await self._session.execute(sa.select(api_keys).where(api_keys.c.id == canonical_uuid(key_id)))).first()
        if row is None:
            raise NotFoundError("API key not found")
        return _api_key(row)

    async def holder(self, secret: str) -> KeyHolder | None:
        """The key with this secret and its creator's current standing, or None."""
        query = (
            sa.select(
                api_keys, organizations.c.kind.label("organization_kind"),
                sa.func.coalesce(users.c.active, sa.false()).label("creator_active"),
                users.c.roles.label("creator_roles"),
            )
            .join(organizations, organizations.c.id == api_keys.c.organization_id)
            .outerjoin(users, users.c.id == api_keys.c.created_by)
            .where(api_keys.c.secret_hash == digest(secret))
        )
        row = (await self._session.execute(query)).first()
        if row is None:
            return None
        return KeyHolder(
            key=_api_key(row), organization_kind=row.organization_kind, creator_active=row.creator_active,
            creator_roles=tuple(row.creator_roles or ()),
        )

    async def list(self, organization_id: str, page: PageRequest) -> tuple[list[ApiKey], int]:
        query = sa.select(api_keys).where(api_keys.c.organization_id == organization_id)
        total = await self._session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
        rows = await self._session.execute(
            query.order_by(api_keys.c.created_at.desc()).limit(page.page_size).offset(page.offset)
        )
        return [_api_key(r) for r in rows], total

    async def revoke(self, key_id: str, now: datetime) -> None:
        await self._session.execute(
            api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=now)
        )

    async def touch(self, key_id: str, now: datetime) -> None:
        await self._session.execute(api_keys.update().where(api_keys.c.id == key_id).values(last_used_at=now))


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id, name=row.name, organization_id=row.organization_id, roles=tuple(row.roles), prefix=row.prefix,
        created_by=row.created_by, created_at=row.created_at, revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )
