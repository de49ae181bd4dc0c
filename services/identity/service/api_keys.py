"""API keys: made by a user for their organization, never stronger than that user is today."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import timedelta

from molbridge.events.v1.identity_pb2 import PrincipalRevoked

from services.identity import domain
from services.identity.domain import ApiKey, CreatedApiKey, Violations
from services.identity.service.base import UseCases
from services.runtime.audit import audit_event
from services.runtime.auth import API_KEY_PREFIX, Principal
from services.runtime.errors import AuthenticationError, NotFoundError
from services.runtime.pagination import PageRequest

LAST_USED_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most this often per key


class ApiKeyUseCases(UseCases):
    async def create_api_key(self, principal: Principal, name: str, roles: Sequence[str]) -> CreatedApiKey:
        domain.require_user(principal)
        domain.require_user_admin(principal, principal.organization_id)
        violations = Violations()
        domain.check_name(name, "name", violations)
        violations.raise_if_any("Invalid API key")
        secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = str(uuid.uuid4())
        async with self._uow() as uow:
            actor = await self._acting(uow, principal)  # a demoted admin grants only what they hold now
            domain.require_user_admin(actor, actor.organization_id)
            granted = domain.grantable_roles(actor, tuple(roles))
            await uow.api_keys.add(key_id, name.strip(), actor.organization_id, granted, secret, actor.subject)
            uow.record(
                audit_event("api_key.created", target_type="api_key", target_id=key_id,
                            details={"roles": ",".join(granted)}),
                actor=actor,
            )
            return CreatedApiKey(api_key=await uow.api_keys.get(key_id), secret=secret)

    async def list_api_keys(self, principal: Principal, page: PageRequest) -> tuple[list[ApiKey], int]:
        async with self._uow() as uow:
            actor = await self._acting(uow, principal)
            domain.require_user_admin(actor, actor.organization_id)
            return await uow.api_keys.list(actor.organization_id, page)

    async def revoke_api_key(self, principal: Principal, key_id: str) -> ApiKey:
        async with self._uow() as uow:
            actor = await self._acting(uow, principal)
            key = await uow.api_keys.get(key_id)
            if not actor.can_see_organization(key.organization_id):
                raise NotFoundError("API key not found")
            domain.require_user_admin(actor, key.organization_id)
            await uow.api_keys.revoke(key.id, self._now())
            # Other services cache key verifications for a while: tell them to forget.
            self._revoke(uow, PrincipalRevoked.API_KEY_REVOKED, actor=actor,
                         organization_id=key.organization_id, api_key_id=key.id)
            uow.record(audit_event("api_key.revoked", target_type="api_key", target_id=key.id),
                       actor=actor, organization_id=key.organization_id)
            return await uow.api_keys.get(key.id)

    async def resolve_api_key(self, secret: str) -> Principal:
        if not secret.startswith(API_KEY_PREFIX) or len(secret) > 100:
            raise AuthenticationError("Invalid API key", detail="API_KEY_INVALID")
        now = self._now()
        async with self._uow() as uow:
            holder = await uow.api_keys.holder(secret)
            principal = holder.principal() if holder is not None else None
            if holder is None or principal is None:
                raise AuthenticationError("Invalid or revoked API key", detail="API_KEY_INVALID")
            last_used = holder.key.last_used_at
            if last_used is None or now - last_used > LAST_USED_RESOLUTION:
                await uow.api_keys.touch(holder.key.id, now)
        return principal
