"""Organizations: created by system admins, each seeing only itself."""

from __future__ import annotations

import uuid

from services.identity import domain
from services.identity.domain import Organization, Violations
from services.identity.service.base import UseCases
from services.runtime.audit import audit_event
from services.runtime.auth import Principal
from services.runtime.errors import NotFoundError
from services.runtime.pagination import PageRequest


class OrganizationUseCases(UseCases):
    async def create_organization(self, principal: Principal, name: str, kind: str, request_id: str) -> Organization:
        principal.require_any_role("system_admin")
        violations = Violations()
        domain.check_name(name, "name", violations)
        if kind not in ("PHARMA", "CRO"):
            violations.add("kind", "must be PHARMA or CRO")
        violations.raise_if_any("Invalid organization")
        async with self._uow() as uow:
            actor = await self._acting(uow, principal)
            actor.require_any_role("system_admin")

            async def create() -> str:
                organization_id = str(uuid.uuid4())
                await uow.organizations.add(organization_id, name.strip(), kind)
                uow.record(
                    audit_event("organization.created", target_type="organization", target_id=organization_id,
                                details={"name": name.strip(), "kind": kind}),
                    actor=actor, organization_id=organization_id,
                )
                return organization_id

            created_id = await uow.once(f"{principal.subject}:CreateOrganization", request_id, create)
            return await uow.organizations.get(created_id)

    async def list_organizations(self, principal: Principal, page: PageRequest) -> tuple[list[Organization], int]:
        async with self._uow() as uow:
            return await uow.organizations.list(
                page, only=None if principal.is_system_admin else principal.organization_id
            )

    async def get_organization(self, principal: Principal, organization_id: str) -> Organization:
        if not principal.can_see_organization(organization_id):
            raise NotFoundError("Organization not found")
        async with self._uow() as uow:
            return await uow.organizations.get(organization_id)
