"""Users: the first admin, creating, reading, changing and deleting accounts."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from molbridge.events.v1.identity_pb2 import PrincipalRevoked

from services.identity import domain
from services.identity.domain import Account, User, Violations
from services.identity.service.base import UseCases
from services.identity.store import IdentityUnitOfWork
from services.identity.store.users import USER_SORT_KEYS
from services.runtime.audit import audit_event, changed_values
from services.runtime.auth import Principal
from services.runtime.errors import NotFoundError, PreconditionError, ValidationError
from services.runtime.pagination import PageRequest

PLATFORM_ORGANIZATION = "Molbridge Platform"


@dataclass(frozen=True)
class Bootstrap:
    created: bool
    email: str = ""
    generated_password: str = ""


class UserUseCases(UseCases):
    async def bootstrap_admin(self, email: str, password: str) -> Bootstrap:
        """First start: a platform organization and one system admin, when no user exists yet."""
        async with self._uow() as uow:
            await uow.serialize("bootstrap")
            if await uow.users.exist():
                return Bootstrap(created=False)
            email = domain.normalize_email(email or "admin@molbridge.local")
            generated = "" if password else secrets.token_urlsafe(18) + "aA1!"
            password = password or generated
            domain.check_password(password, "MOLBRIDGE_ADMIN_PASSWORD")
            organization_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
            await uow.organizations.add(organization_id, PLATFORM_ORGANIZATION, "PLATFORM")
            await uow.users.add(user_id, email, "Platform administrator", organization_id, ("system_admin",),
                                await self._hash(password))
            uow.record(
                audit_event("user.created", target_type="user", target_id=user_id, details={"bootstrap": "true"}),
                organization_id=organization_id, actor_id="",
            )
            await self._announce_user(uow, user_id, actor=None)
            return Bootstrap(created=True, email=email, generated_password=generated)

    async def announce_users(self) -> int:
        """UserChanged for every account as it is now (a new consumer's directory, e.g. the notification
        service's on an existing deployment); deactivated accounts count as deleted (a deletion is a
        deactivation here). Answers how many."""
        async with self._uow() as uow:
            user_ids = await uow.users.ids()
            for user_id in user_ids:
                account = await uow.users.get(user_id)
                await self._announce_user(uow, user_id, actor=None, deleted=not account.user.active)
            return len(user_ids)

    async def create_user(
        self, principal: Principal, *, email: str, full_name: str, password: str, roles: Sequence[str],
        organization_id: str, request_id: str,
    ) -> User:
        organization_id = organization_id or principal.organization_id
        domain.require_user_admin(principal, organization_id)
        email = domain.normalize_email(email)
        async with self._uow() as uow:
            actor = await self._acting(uow, principal)
            domain.require_user_admin(actor, organization_id)
            organization = await uow.organizations.get(organization_id)
            violations = Violations()
            domain.check_email(email, violations)
            domain.check_name(full_name, "full_name", violations)
            checked_roles = domain.check_roles(tuple(roles), organization.kind, violations)
            violations.raise_if_any("Invalid user")
            domain.check_password(password)

            async def create() -> str:
                user_id = str(uuid.uuid4())
                await uow.users.add(user_id, email, full_name.strip(), organization_id, checked_roles,
                                    await self._hash(password))
                uow.record(
                    audit_event("user.created", target_type="user", target_id=user_id,
                                details={"roles": ",".join(checked_roles)}),
                    actor=actor, organization_id=organization_id,
                )
                await self._announce_user(uow, user_id, actor=actor)
                return user_id

            user_id = await uow.once(f"{principal.subject}:CreateUser", request_id, create)
            return (await uow.users.get(user_id)).user

    async def list_users(
        self, principal: Principal, page: PageRequest, organization_id: str, sort: str
    ) -> tuple[list[User], int]:
        if organization_id and organization_id != principal.organization_id and not principal.is_system_admin:
            raise NotFoundError("Organization not found")
        if sort.lstrip("-") and sort.lstrip("-") not in USER_SORT_KEYS:
            raise ValidationError(
                "Unknown sort key",
                field_violations=[("sort", f"one of {', '.join(USER_SORT_KEYS)}, '-' for descending")],
            )
        async with self._uow() as uow:
            return await uow.users.list(organization_id or principal.organization_id, page, sort or "email")

    async def get_me(self, principal: Principal) -> User:
        domain.require_user(principal)
        async with self._uow() as uow:
            return (await uow.users.get(principal.subject)).user

    async def get_user(self, principal: Principal, user_id: str) -> User:
        async with self._uow() as uow:
            return (await self._visible(uow, principal, user_id)).user

    async def _visible(
        self, uow: IdentityUnitOfWork, principal: Principal, user_id: str, *, lock: bool = False
    ) -> Account:
        account = await uow.users.get(user_id, lock=lock)
        if not principal.can_see_organization(account.user.organization_id):
            raise NotFoundError("User not found")  # another organization's user does not exist for you
        return account

    async def update_me(self, principal: Principal, full_name: str) -> User:
        domain.require_user(principal)
        violations = Violations()
        domain.check_name(full_name, "full_name", violations)
        violations.raise_if_any("Invalid profile")
        async with self._uow() as uow:
            await uow.users.update(principal.subject, full_name=full_name.strip(), updated_at=self._now())
            uow.record(
                audit_event("user.updated", target_type="user", target_id=principal.subject,
                            details={"fields": "full_name"}),
                actor=principal,
            )
            await self._announce_user(uow, principal.subject, actor=principal)
            return (await uow.users.get(principal.subject)).user

    async def update_user(
        self, principal: Principal, user_id: str, *, full_name: str, roles: Sequence[str], unlock: bool
    ) -> User:
        async with self._uow() as uow:
            actor = await self._acting(uow, principal)
            account = await self._visible(uow, actor, user_id, lock=True)
            domain.require_user_admin(actor, account.user.organization_id)
            violations = Violations()
            domain.check_name(full_name, "full_name", violations, required=False)
            changes: dict[str, Any] = {"updated_at": self._now()}
            if full_name.strip():
                changes["full_name"] = full_name.strip()
            if roles:
                changes["roles"] = list(domain.check_roles(tuple(roles), account.organization_kind, violations))
            if unlock:
                changes.update(failed_logins=0, locked_until=None)
            violations.raise_if_any("Invalid user")
            await uow.users.update(account.user.id, **changes)
            if roles and domain.roles_changed(account.user.roles, tuple(changes["roles"])):
                # Tokens carry roles: the ones issued before the change must not keep the old ones.
                self._revoke_account(uow, account, PrincipalRevoked.ROLES_CHANGED, actor)
            before = {"full_name": account.user.full_name, "roles": ",".join(sorted(account.user.roles))}
            after = {"full_name": changes.get("full_name", before["full_name"]),
                     "roles": ",".join(sorted(changes.get("roles", account.user.roles)))}
            uow.record(
                audit_event("user.updated", target_type="user", target_id=account.user.id, details={
                    "fields": ",".join(sorted(k for k in changes if k != "updated_at")),
                    **changed_values(before, after),
                }),
                actor=actor, organization_id=account.user.organization_id,
            )
            await self._announce_user(uow, account.user.id, actor=actor)
            return (await uow.users.get(account.user.id)).user

    async def delete_user(self, principal: Principal, user_id: str) -> User:
        now = self._now()
        async with self._uow() as uow:
            actor = await self._acting(uow, principal)
            account = await self._visible(uow, actor, user_id, lock=True)
            domain.require_user_admin(actor, account.user.organization_id)
            if account.user.id == actor.subject:
                raise PreconditionError("You cannot delete your own account", detail="SELF_DELETE")
            await uow.users.update(account.user.id, active=False, updated_at=now)
            await uow.sessions.revoke_all(account.user.id, now)
            self._revoke_account(uow, account, PrincipalRevoked.USER_DELETED, actor)
            uow.record(
                audit_event("user.deleted", target_type="user", target_id=account.user.id),
                actor=actor, organization_id=account.user.organization_id,
            )
            await self._announce_user(uow, account.user.id, actor=actor, deleted=True)
            return (await uow.users.get(account.user.id)).user
