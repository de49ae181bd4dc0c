"""Re-authenticating a signer (21 CFR 11.200): the caller's password, and MFA code when enrolled, checked again."""

from __future__ import annotations

from services.identity import domain
from services.identity.domain import Signer
from services.identity.service.sessions import SessionUseCases
from services.runtime.audit import audit_event
from services.runtime.auth import Principal
from services.runtime.errors import ValidationError


class SignerUseCases(SessionUseCases):
    async def confirm_signer(self, principal: Principal, password: str, mfa_code: str) -> Signer:
        """The caller, confirmed for one signature. Every failure counts toward the login lockout."""
        domain.require_person(principal)
        if not password:
            raise ValidationError("Enter your password to sign", field_violations=[("password", "required")])
        locked = False
        async with self._uow() as uow:
            account = await uow.users.get(principal.subject, lock=True)
            account.acting_principal(principal)  # a deactivated user cannot sign
            user = account.user
            if domain.is_locked(user.locked_until, self._now()):
                await self._burn_one_verification(password)
                uow.record(
                    audit_event("auth.signer_confirmation_failed", target_type="user", target_id=user.id,
                                success=False, details={"reason": "account locked"}),
                    organization_id=user.organization_id, actor_id=user.id,
                )
                locked = True
            elif len(password) > domain.MAX_PASSWORD_LENGTH or not await self._matches(
                account.password_hash, password
            ):
                locked = await self._count_failure(uow, account, "auth.signer_confirmation_failed", "wrong password")
            elif user.mfa_enabled and not await self._spend_totp(uow, account, mfa_code):
                reason = "wrong or reused MFA code" if mfa_code else "MFA code missing"
                locked = await self._count_failure(uow, account, "auth.signer_confirmation_failed", reason)
            else:
                await uow.users.update(user.id, failed_logins=0)
                uow.record(
                    audit_event("auth.signer_confirmed", target_type="user", target_id=user.id,
                                details={"mfa": "totp"} if user.mfa_enabled else {}),
                    organization_id=user.organization_id, actor_id=user.id,
                )
                return domain.signer_of(user)
        raise domain.signer_not_confirmed(locked)  # after the commit: the failure is counted and audited
