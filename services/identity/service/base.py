"""What every identity use case shares: its dependencies, password hashing, audit and revocation events."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from molbridge.events.v1.identity_pb2 import PrincipalRevoked, UserChanged

from services.identity.domain import Account
from services.identity.store import IdentityUnitOfWork
from services.identity.store.audit_anchors import AuditAnchors
from services.identity.store.signing_keys import KeyRing
from services.runtime.auth import Principal
from services.runtime.email import EmailSender
from services.runtime.revocation import Revocations
from services.runtime.storage import ObjectStorage
from services.runtime.uow import Transactions

log = logging.getLogger("molbridge.identity")


def utcnow() -> datetime:
    return datetime.now(UTC)



class UseCases:
    """The dependencies of every use case; the areas (sessions, users, …) subclass it."""

    def __init__(
        self,
        uow: Transactions[IdentityUnitOfWork],
        keyring: KeyRing,
        email: EmailSender,
        *,
        public_url: str,
        clock: Callable[[], datetime] = utcnow,
        hasher: PasswordHasher | None = None,
        revocations: Revocations | None = None,
        storage: ObjectStorage | None = None,
    ) -> None:
        self._uow = uow
        # Where the audit trail's anchors are written (None: no anchors, verification checks the chain only).
        self._anchors = AuditAnchors(storage) if storage is not None else None
        self._keys = keyring
        self._email = email
        self._public_url = public_url.rstrip("/")
        self._now = clock
        self._hasher = hasher or PasswordHasher()  # argon2id
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        # This process's view of revoked tokens: applied at once here, on other processes via the bus.
        self.revocations = revocations or Revocations()
        self._background: set[asyncio.Task[None]] = set()

    # ---- passwords ---------------------------------------------------------------------------

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def _matches(self, password_hash: str, password: str) -> bool:
        def verify() -> bool:
            try:
                return self._hasher.verify(password_hash, password)
            except (VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(verify)

    async def _burn_one_verification(self, password: str) -> None:
        """As much work as checking a real password, so a refusal takes as long as a wrong password."""
        await self._matches(self._dummy_hash, password)

    # ---- who acts ----------------------------------------------------------------------------

    async def _acting(self, uow: IdentityUnitOfWork, principal: Principal) -> Principal:
        """For sensitive actions: the caller as their account stands now, not as their token says."""
        if principal.via != "token":
            return principal  # API keys are verified live on every call (resolve_api_key)
        return (await uow.users.get(principal.subject)).acting_principal(principal)

    # ---- revocation --------------------------------------------------------------------------

    def _revoke(
        self, uow: IdentityUnitOfWork, reason: PrincipalRevoked.Reason.ValueType, *, actor: Principal | None,
        organization_id: str, user_id: str = "", session_id: str = "", api_key_id: str = "",
    ) -> None:
        """Tokens issued until now stop working everywhere: the event goes out with this change, and
        this process applies it at once (before the commit: a rollback only costs a fresh login)."""
        event = PrincipalRevoked(
            user_id=user_id, organization_id=organization_id, session_id=session_id, api_key_id=api_key_id,
            reason=reason,
        )
        now = self._now()
        # Milliseconds, like the tokens' `iat_ms`: a login after this instant is not caught by it.
        event.not_before.FromDatetime(now.replace(microsecond=now.microsecond // 1000 * 1000))
        uow.record(event, actor=actor, organization_id=organization_id)
        self.revocations.apply(event)

    def _revoke_account(
        self, uow: IdentityUnitOfWork, account: Account, reason: PrincipalRevoked.Reason.ValueType,
        actor: Principal | None,
    ) -> None:
        self._revoke(uow, reason, actor=actor, organization_id=account.user.organization_id, user_id=account.user.id)

    # ---- the account as others keep it ------------------------------------------------------

    async def _announce_user(
        self, uow: IdentityUnitOfWork, user_id: str, *, actor: Principal | None, deleted: bool = False
    ) -> None:
        """UserChanged with the account as this transaction leaves it (the notification service's
        directory): call it after every change of a user's profile, roles or state."""
        account = await uow.users.get(user_id)
        user = account.user
        event = UserChanged(
            user_id=user.id, organization_id=user.organization_id, organization_kind=account.organization_kind,
            email=user.email, display_name=user.full_name, roles=list(user.roles), active=user.active,
            deleted=deleted,
        )
        event.at.FromDatetime(self._now())
        uow.record(event, actor=actor, organization_id=user.organization_id)

    # ---- background ----------------------------------------------------------------------------

    def _in_background(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Runs `work` after the answer is sent (its duration must not show in the answer's timing)."""

        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("%s failed", what)

        task = asyncio.create_task(run())
        self._background.add(task)  # a reference, so the task is not collected before it ends
        task.add_done_callback(self._background.discard)
