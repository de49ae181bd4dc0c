"""Passwords and second factors: change, reset by email, TOTP enrolment."""

from __future__ import annotations

import secrets
from email.message import EmailMessage

import pyotp
from molbridge.events.v1.identity_pb2 import PrincipalRevoked

from services.identity import domain
from services.identity.domain import User, Violations
from services.identity.service.base import UseCases
from services.identity.service.sessions import totp_step
from services.identity.store import IdentityUnitOfWork
from services.runtime.audit import audit_event
from services.runtime.auth import Principal
from services.runtime.errors import PreconditionError, ValidationError


class PasswordUseCases(UseCases):
    async def _check_history(self, uow: IdentityUnitOfWork, user_id: str, new_password: str) -> None:
        for old_hash in await uow.users.recent_password_hashes(user_id, domain.PASSWORD_HISTORY_DEPTH):
            if await self._matches(old_hash, new_password):
                raise ValidationError(
                    f"Choose a password you have not used for your last {domain.PASSWORD_HISTORY_DEPTH} changes",
                    detail="PASSWORD_REUSED",
                    field_violations=[("new_password", "used recently")],
                )

    async def change_password(self, principal: Principal, current_password: str, new_password: str) -> None:
        domain.require_user(principal)
        domain.check_password(new_password, "new_password")
        async with self._uow() as uow:
            account = await uow.users.get(principal.subject, lock=True)
            if not await self._matches(account.password_hash, current_password):
                raise ValidationError(
                    "Current password is wrong", detail="WRONG_PASSWORD",
                    field_violations=[("current_password", "does not match")],
                )
            await self._check_history(uow, account.user.id, new_password)
            await uow.users.set_password(account.user.id, await self._hash(new_password), self._now())
            uow.record(
                audit_event("user.password_changed", target_type="user", target_id=account.user.id),
                organization_id=account.user.organization_id, actor_id=account.user.id,
            )

    async def request_password_reset(self, email: str) -> None:
        """Answers alike for every address — known, unknown, deactivated or over its email limit — and
        sends the email after answering, so neither the answer nor its timing tells them apart."""
        email = domain.normalize_email(email)
        violations = Violations()
        domain.check_email(email, violations)
        violations.raise_if_any("A valid email is required")
        token = secrets.token_urlsafe(32)
        now = self._now()
        send = False
        async with self._uow() as uow:
            account = await uow.users.by_email(email)
            if account is None or not account.user.active:
                uow.record(
                    audit_event("auth.password_reset_requested", target_type="user",
                                target_id=account.user.id if account else "", success=False,
                                details={"email": email, "reason": "unknown or inactive user"}),
                    organization_id=account.user.organization_id if account else "", actor_id="",
                )
            else:
                user = account.user
                sent = await uow.password_resets.count_since(user.id, now - domain.RESET_EMAIL_WINDOW)
                send = domain.may_send_reset_email(sent)
                if send:
                    await uow.password_resets.add(token, user.id, now, now + domain.PASSWORD_RESET_TTL)
                uow.record(
                    audit_event("auth.password_reset_requested", target_type="user", target_id=user.id,
                                success=send, details={} if send else {"reason": "reset email limit reached"}),
                    organization_id=user.organization_id, actor_id=user.id,
                )
        if send:
            self._in_background(self._email.send(self._reset_message(email, token)), "password reset email")

    def _reset_message(self, email: str, token: str) -> EmailMessage:
        minutes = int(domain.PASSWORD_RESET_TTL.total_seconds() // 60)
        message = EmailMessage()
        message["To"] = email
        message["From"] = "Molbridge <no-reply@molbridge.local>"
        message["Subject"] = "Reset your Molbridge password"
        message.set_content(
            f"Someone asked to reset the password of {email}.\n\n"
            f"Open {self._public_url}/reset-password?token={token}\n"
            f"or use this reset token: {token}\n\n"
            f"It works once, for {minutes} minutes. If it was not you, ignore this message."
        )
        return message

    async def confirm_password_reset(self, token: str, new_password: str) -> None:
        domain.check_password(new_password, "new_password")
        now = self._now()
        async with self._uow() as uow:
            reset = await uow.password_resets.by_secret(token, lock=True)
            if reset is None or reset.used_at is not None or reset.expires_at <= now:
                raise ValidationError(
                    "Reset token invalid, used or expired: request a new one",
                    detail="RESET_TOKEN_INVALID",
                    field_violations=[("token", "invalid, used or expired")],
                )
            account = await uow.users.get(reset.user_id, lock=True)
            await self._check_history(uow, account.user.id, new_password)
            await uow.users.set_password(account.user.id, await self._hash(new_password), now)
            await uow.password_resets.mark_used(reset, now)
            await uow.sessions.revoke_all(account.user.id, now)
            self._revoke_account(uow, account, PrincipalRevoked.PASSWORD_RESET, actor=None)
            uow.record(
                audit_event("auth.password_reset", target_type="user", target_id=account.user.id),
                organization_id=account.user.organization_id, actor_id=account.user.id,
            )

    async def enroll_mfa(self, principal: Principal) -> tuple[str, str]:
        domain.require_user(principal)
        secret = pyotp.random_base32()
        async with self._uow() as uow:
            account = await uow.users.get(principal.subject, lock=True)
            if account.user.mfa_enabled:
                raise PreconditionError("MFA is already enabled for this account", detail="MFA_ALREADY_ENABLED")
            await uow.users.update(account.user.id, mfa_secret=secret)
        return secret, pyotp.TOTP(secret).provisioning_uri(name=account.user.email, issuer_name="Molbridge")

    async def confirm_mfa(self, principal: Principal, code: str) -> User:
        domain.require_user(principal)
        async with self._uow() as uow:
            account = await uow.users.get(principal.subject, lock=True)
            if not account.mfa_secret:
                raise PreconditionError("Start with POST /api/v1/auth/mfa/enroll", detail="MFA_NOT_ENROLLED")
            step = totp_step(account.mfa_secret, code, self._now())
            if step is None:
                raise ValidationError("Wrong MFA code", field_violations=[("code", "does not match")])
            await uow.users.update(account.user.id, mfa_enabled=True, mfa_last_step=step)
            uow.record(
                audit_event("auth.mfa_enabled", target_type="user", target_id=account.user.id),
                organization_id=account.user.organization_id, actor_id=account.user.id,
            )
            return (await uow.users.get(account.user.id)).user
