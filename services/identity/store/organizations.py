"""Organizations."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.domain import Organization
from services.identity.store.tables import organizations
from services.runtime.db import canonical_uuid, execute_unique
from services.runtime.errors import ConflictError, NotFoundError
from services.runtime.pagination import PageRequest


class OrganizationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, organization_id: str) -> Organization:
        query = sa.select(organizations).where(organizations.c.id == canonical_uuid(organization_id))
        row = (await self._session.execute(query)).first()
        if row is None:
            raise NotFoundError("Organization not found")
        return _organization(row)

    async def add(self, organization_id: str, name: str, kind: str) -> None:
        await execute_unique(
            self._session, organizations.insert().values(id=organization_id, name=name, kind=kind),
            ConflictError(f"An organization named '{name}' already exists"),
        )

    async def list(self, page: PageRequest, *, only: str | None = None) -> tuple[list[Organization], int]:
        """A page by name; `only` restricts it to one organization (what a non-platform caller sees)."""
        query = sa.select(organizations)
        if only is not None:
            query = query.where(organizations.c.id == canonical_uuid(only))
        total = await self._session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
        rows = await self._session.execute(
            query.order_by(organizations.c.name).limit(page.page_size).offset(page.offset)
        )
        return [_organization(r) for r in rows], total


def _organization(row: Any) -> Organization:
    return Organization(id=row.id, name=row.name, kind=row.kind, created_at=row.created_at)
