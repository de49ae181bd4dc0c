"""Registration numbering of an organization: its prefix, chosen by default from the organization's name.

- The default prefix comes from the organization's name (domain/registration_numbers.default_prefix),
  asked of identity with the caller's credentials the first time the organization registers through
  the API (CreateMolecule, BatchCreateMolecules, StartImport) or asks for its prefix. Registrations
  that find no counter (none of those calls came first) start with DEFAULT_PREFIX.
- pharma_admin (and system_admin) may change the prefix until the first number is issued (409 after).
"""

from __future__ import annotations

from services.molecule.adapters.identity_organizations import OrganizationNames
from services.molecule.adapters.identity_users import Credentials
from services.molecule.domain.registration_numbers import PREFIX_ROLES, default_prefix, validate_prefix
from services.molecule.store.uow import MoleculeTransactions, MoleculeUnitOfWork
from services.runtime.audit import audit_event, changed_values
from services.runtime.auth import Principal


class Numbering:
    def __init__(self, uow: MoleculeTransactions, organizations: OrganizationNames | None) -> None:
        """Without `organizations` new organizations start with DEFAULT_PREFIX."""
        self._uow = uow
        self._organizations = organizations

    async def prepare(self, principal: Principal, credentials: Credentials) -> None:
        """Gives the caller's organization its default prefix if it has none yet."""
        if self._organizations is None:
            return
        async with self._uow() as uow:
            if await uow.molecules.has_numbering(principal.organization_id):
                return
        name = await self._organizations.name_of(principal.organization_id, credentials)
        prefix = default_prefix(name)
        async with self._uow() as uow:
            if await uow.molecules.start_numbering(principal.organization_id, prefix):
                _record_prefix(uow, principal, "", prefix, origin="organization name")

    async def prefix(self, principal: Principal, credentials: Credentials) -> tuple[str, bool]:
        """(prefix, whether numbers were issued) of the caller's organization."""
        await self.prepare(principal, credentials)
        async with self._uow() as uow:
            return await uow.molecules.registration_prefix(principal.organization_id)

    async def set_prefix(self, principal: Principal, prefix: str) -> tuple[str, bool]:
        """Org admins only, and only before the first number (409 after: numbers never change)."""
        principal.require_any_role(*PREFIX_ROLES)
        valid = validate_prefix(prefix)
        async with self._uow() as uow:
            before, _ = await uow.molecules.registration_prefix(principal.organization_id)
            await uow.molecules.set_registration_prefix(principal.organization_id, valid)
            if before != valid:
                _record_prefix(uow, principal, before, valid, origin="set")
        return valid, False


def _record_prefix(uow: MoleculeUnitOfWork, principal: Principal, before: str, after: str, *, origin: str) -> None:
    """registration_prefix.set; `origin`: "set" by an admin, or the default from the "organization name"."""
    details = changed_values({"prefix": before}, {"prefix": after}) | {"origin": origin}
    uow.record(
        audit_event("registration_prefix.set", target_type="organization", target_id=principal.organization_id,
                    details=details),
        actor=principal,
    )
