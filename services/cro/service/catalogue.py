"""Catalogue use cases: CRO services created and edited by their organization's cro_admin, listed for
everyone (a CRO's own inactive ones too), deleted only when never used (deactivated otherwise)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from molbridge.events.v1.audit_pb2 import AuditRecorded

from services.cro.domain.catalogue import CroService, ServiceFields, apply_fields, parse_money, require_cro_admin
from services.cro.domain.vocabulary import ServiceType
from services.cro.service.ports import OrganizationNames
from services.cro.store.catalogue import SORTS, CatalogueFilter
from services.cro.store.uow import CroTransactions, CroUnitOfWork
from services.runtime.audit import audit_event
from services.runtime.auth import Principal
from services.runtime.errors import AuthorizationError, NotFoundError, ValidationError
from services.runtime.pagination import PageRequest


def _now() -> datetime:
    return datetime.now(UTC)


class CatalogueService:
    def __init__(self, uow: CroTransactions, names: OrganizationNames | None = None) -> None:
        self._uow = uow
        self._names = names

    async def _organization_name(self, principal: Principal, credentials: Mapping[str, str]) -> str:
        """The CRO's name, asked with the cro_admin's own credentials (who may read their organization)."""
        if self._names is None or not credentials:
            return ""
        return await self._names.organization_name(credentials, principal.organization_id)

    async def create(
        self,
        principal: Principal,
        fields: ServiceFields,
        *,
        request_id: str = "",
        credentials: Mapping[str, str] | None = None,
    ) -> CroService:
        require_cro_admin(principal)
        now = _now()
        service = CroService(
            id=str(uuid.uuid4()),
            organization_id=principal.organization_id,
            name="",
            service_type=ServiceType.CUSTOM,
            base_price=Decimal(0),
            currency="",
            turnaround_days=0,
            created_by=principal.subject,
            created_at=now,
            updated_at=now,
            organization_name=await self._organization_name(principal, credentials or {}),
        )
        # Every required field is checked (an empty type or currency is a violation, not a default).
        given = replace(
            fields,
            name=fields.name or "",
            service_type=fields.service_type or "",
            base_price=fields.base_price or "0",
            currency=fields.currency or "",
            turnaround_days=fields.turnaround_days or 0,
        )
        apply_fields(service, given, creating=True)

        async def add() -> str:
            await uow.catalogue.add(service)
            uow.record(self._audit("cro_service.created", service), actor=principal)
            return service.id

        async with self._uow() as uow:
            service_id = await uow.once(f"cro_service:{principal.organization_id}", request_id, add)
            stored = await uow.catalogue.get(service_id)
        assert stored is not None  # created in this transaction or an earlier one
        return stored

    async def get(self, principal: Principal, service_id: str) -> CroService:
        async with self._uow() as uow:
            return await self._visible(uow, principal, service_id)

    async def update(
        self,
        principal: Principal,
        service_id: str,
        fields: ServiceFields,
        *,
        credentials: Mapping[str, str] | None = None,
    ) -> CroService:
        require_cro_admin(principal)
        name = await self._organization_name(principal, credentials or {})
        async with self._uow() as uow:
            service = await self._owned(uow, principal, service_id)
            changed = apply_fields(service, fields, creating=False)
            if name and name != service.organization_name and service.organization_id == principal.organization_id:
                service.organization_name = name  # a renamed organization shows its new name from now on
                changed.append("organization_name")
            if changed:
                service.updated_at = _now()
                await uow.catalogue.save(service)
                uow.record(
                    self._audit("cro_service.updated", service, {"fields": ",".join(changed)}), actor=principal
                )
            return service

    async def delete(self, principal: Principal, service_id: str) -> tuple[bool, CroService]:
        """(True, the service as it was) when removed; (False, the deactivated service) when submissions use it."""
        require_cro_admin(principal)
        async with self._uow() as uow:
            service = await self._owned(uow, principal, service_id)
            if await uow.catalogue.in_use(service.id):
                if service.active:
                    service.active = False
                    service.updated_at = _now()
                    await uow.catalogue.save(service)
                uow.record(self._audit("cro_service.deactivated", service), actor=principal)
                return False, service
            await uow.catalogue.delete(service.id)
            uow.record(self._audit("cro_service.deleted", service), actor=principal)
            return True, service

    async def list_services(
        self,
        principal: Principal,
        page: PageRequest,
        *,
        service_type: str = "",
        organization_id: str = "",
        max_price: str = "",
        max_turnaround_days: int = 0,
        include_inactive: bool = False,
        sort: str = "",
    ) -> tuple[list[CroService], int]:
        violations: list[tuple[str, str]] = []
        if service_type and service_type not in ServiceType.__members__:
            violations.append(("service_type", f"one of {', '.join(ServiceType)}"))
        price = parse_money("max_price", max_price, violations) if max_price else None
        if max_turnaround_days < 0:
            violations.append(("max_turnaround_days", "at least 0"))
        sort = sort or "name"
        if sort not in SORTS:
            violations.append(("sort", f"one of {', '.join(SORTS)}"))
        if violations:
            raise ValidationError("invalid filters", field_violations=violations)
        found = CatalogueFilter(
            service_type=service_type,
            organization_id=organization_id,
            max_price=price,
            max_turnaround_days=max_turnaround_days,
            include_inactive_of=principal.organization_id if include_inactive else "",
            sort=sort,
        )
        async with self._uow() as uow:
            return await uow.catalogue.find(found, page)

    # -- helpers -------------------------------------------------------------------------------------

    @staticmethod
    async def _visible(uow: CroUnitOfWork, principal: Principal, service_id: str, *, lock: bool = False) -> CroService:
        """Active services are everyone's to read; an inactive one only its organization's."""
        service = await uow.catalogue.get(service_id, lock=lock)
        if service is None or not (service.active or principal.can_see_organization(service.organization_id)):
            raise NotFoundError(f"CRO service {service_id} not found", detail="CRO_SERVICE_NOT_FOUND")
        return service

    async def _owned(self, uow: CroUnitOfWork, principal: Principal, service_id: str) -> CroService:
        service = await self._visible(uow, principal, service_id, lock=True)
        if not principal.can_see_organization(service.organization_id):
            # Another CRO's service: not theirs to change (they may read it, so not a 404).
            raise AuthorizationError(
                "only the cro_admin of the organization offering this service may change it",
                detail="NOT_SERVICE_OWNER",
            )
        return service

    @staticmethod
    def _audit(action: str, service: CroService, details: Mapping[str, Any] | None = None) -> AuditRecorded:
        return audit_event(
            action,
            target_type="cro_service",
            target_id=service.id,
            details={"name": service.name, **{k: str(v) for k, v in (details or {}).items()}},
        )
