"""The catalogue's rows ↔ CroService."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.cro.domain.catalogue import CroService
from services.cro.domain.vocabulary import ServiceType
from services.cro.store.tables import cro_services, submissions
from services.runtime.db import canonical_uuid
from services.runtime.pagination import PageRequest

_c = cro_services.c

SORTS: dict[str, Sequence[Any]] = {
    "name": (_c.name, _c.id),
    "price": (_c.base_price, _c.name, _c.id),
    "-price": (_c.base_price.desc(), _c.name, _c.id),
    "turnaround_days": (_c.turnaround_days, _c.name, _c.id),
}


@dataclass(frozen=True)
class CatalogueFilter:
    service_type: str = ""
    organization_id: str = ""
    max_price: Decimal | None = None
    max_turnaround_days: int = 0
    include_inactive_of: str = ""  # this organization's inactive services are listed too
    sort: str = "name"


def _values(service: CroService) -> dict[str, Any]:
    return {
        "id": service.id,
        "organization_id": service.organization_id,
        "organization_name": service.organization_name,
        "name": service.name,
        "description": service.description,
        "service_type": service.service_type.value,
        "base_price": service.base_price,
        "currency": service.currency,
        "turnaround_days": service.turnaround_days,
        "specification_schema": service.specification_schema,
        "active": service.active,
        "created_by": service.created_by,
        "created_at": service.created_at,
        "updated_at": service.updated_at,
    }


def _service(row: Any) -> CroService:
    return CroService(
        id=str(row.id),
        organization_id=str(row.organization_id),
        name=row.name,
        description=row.description,
        service_type=ServiceType(row.service_type),
        base_price=Decimal(row.base_price),
        currency=row.currency,
        turnaround_days=row.turnaround_days,
        specification_schema=dict(row.specification_schema or {}),
        active=row.active,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        organization_name=row.organization_name,
    )


class CatalogueRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, service: CroService) -> None:
        await self._session.execute(sa.insert(cro_services).values(**_values(service)))

    async def get(self, service_id: str, *, lock: bool = False) -> CroService | None:
        key = canonical_uuid(service_id)
        if key is None:
            return None
        query = sa.select(cro_services).where(_c.id == key)
        if lock:
            query = query.with_for_update()
        row = (await self._session.execute(query)).one_or_none()
        return _service(row) if row else None

    async def save(self, service: CroService) -> None:
        values = _values(service)
        del values["id"], values["created_at"]
        await self._session.execute(sa.update(cro_services).where(_c.id == service.id).values(**values))

    async def delete(self, service_id: str) -> None:
        await self._session.execute(sa.delete(cro_services).where(_c.id == service_id))

    async def in_use(self, service_id: str) -> bool:
        used = await self._session.scalar(
            sa.select(sa.exists().where(submissions.c.cro_service_id == service_id))
        )
        return bool(used)

    async def find(self, found: CatalogueFilter, page: PageRequest) -> tuple[list[CroService], int]:
        conditions: list[Any] = []
        if found.include_inactive_of:
            conditions.append(sa.or_(_c.active, _c.organization_id == found.include_inactive_of))
        else:
            conditions.append(_c.active)
        if found.service_type:
            conditions.append(_c.service_type == found.service_type)
        if found.organization_id:
            organization = canonical_uuid(found.organization_id)
            conditions.append(_c.organization_id == organization if organization else sa.false())
        if found.max_price is not None:
            conditions.append(_c.base_price <= found.max_price)
        if found.max_turnaround_days:
            conditions.append(_c.turnaround_days <= found.max_turnaround_days)
        where = sa.and_(*conditions)
        total = await self._session.scalar(sa.select(sa.func.count()).select_from(cro_services).where(where))
        rows = await self._session.execute(
            sa.select(cro_services)
            .where(where)
            .order_by(*SORTS[found.sort])
            .limit(page.page_size)
            .offset(page.offset)
        )
        return [_service(r) for r in rows], int(total or 0)
