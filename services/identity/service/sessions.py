"""Signing in and out: login (with MFA), refresh, logout, and the signing keys behind the tokens."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

import jwt
import pyotp
from molbridge.events.v1.identity_pb2 import PrincipalRevoked

from services.identity import domain
from services.identity.domain import Account, Session
from services.identity.service.base import UseCases
from services.identity.store import IdentityUnitOfWork
from services.identity.store.signing_keys import sign
from services.runtime.audit import audit_event
from services.runtime.auth import AUDIENCE, ISSUER, Principal
from services.runtime.errors import AuthenticationError, ValidationError

MFA_AUDIENCE = "molbridge-mfa"


class SessionUseCases(UseCases):
    async def login(self, email: str, password: str) -> Session:
        email = domain.normalize_email(email)
        if not email or not password:
            raise ValidationError(
                "Email and password are required",
                field_violations=[(f, "required") for f, v in (("email", email), ("password", password)) if not v],
            )
        if len(password) > domain.MAX_PASSWORD_LENGTH:
            raise domain.invalid_credentials()
        now = self._now()
        async with self._uow() as uow:
            account = await uow.users.by_email(email, lock=True)
            # Every refusal below answers alike and costs one Argon2 verification: the answer
            # never tells whether the email exists or the account is locked (the audit trail does).
            if account is None or not account.user.active:
                await self._burn_one_verification(password)
                uow.record(
                    audit_event(
                        "auth.login_failed", target_type="user", target_id=account.user.id if account else "",
                        success=False, details={"email": email, "reason": "unknown or inactive user"},
                    ),
                    organization_id=account.user.organization_id if account else "", actor_id="",
                )
            elif domain.is_locked(account.user.locked_until, now):
                await self._burn_one_verification(password)
                uow.record(
                    audit_event("auth.login_failed", target_type="user", target_id=account.user.id, success=False,
                                details={"reason": "account locked"}),
                    organization_id=account.user.organization_id, actor_id=account.user.id,
                )
            elif not await self._matches(account.password_hash, password):
                await self._count_failure(uow, account, "auth.login_failed", "wrong password")
            else:
                await uow.users.update(account.user.id, failed_logins=0)
                if account.user.mfa_enabled:
                    return Session(user=account.user, mfa_token=await self._mfa_challenge(uow, account))
                result = await self._issue_session(uow, account)
                uow.record(
                    audit_event("auth.login_succeeded", target_type="user", target_id=account.user.id),
                    organization_id=account.user.organization_id, actor_id=account.user.id,
                )
                return result
        raise domain.invalid_credentials()  # after the commit: the failure is counted and audited

    async def _count_failure(self, uow: IdentityUnitOfWork, account: Account, action: str, reason: str) -> bool:
        """One more failed attempt toward the lockout, audited as `action`; True when it locked the account."""
        outcome = domain.after_failed_login(account.failed_logins, self._now())
        await uow.users.update(account.user.id, failed_logins=outcome.failed_logins, locked_until=outcome.locked_until)
        user = account.user
        uow.record(
            audit_event(action, target_type="user", target_id=user.id, success=False, details={"reason": reason}),
            organization_id=user.organization_id, actor_id=user.id,
        )
        if outcome.locked_until is None:
            return False
        uow.record(
            audit_event("auth.account_locked", target_type="user", target_id=user.id,
                        details={"until": outcome.locked_until.isoformat()}),
            organization_id=user.organization_id, actor_id=user.id,
        )
        return True

    async def _spend_totp(self, uow: IdentityUnitOfWork, account: Account, code: str) -> bool:
        """Whether `code` is the user's current TOTP code, not used before; a good code is spent (single use)."""
        step = totp_step(account.mfa_secret or "", code, self._now())
        if not account.user.mfa_enabled or step is None or step <= account.mfa_last_step:
            return False
        await uow.users.update(account.user.id, mfa_last_step=step)
        return True

    async def _issue_session(self, uow: IdentityUnitOfWork, account: Account, family_id: str | None = None) -> Session:
        now = self._now()
        user = account.user
        family_id = family_id or str(uuid.uuid4())
        key = await self._keys.signing_key(uow, now)
        access_token = sign(
            key,
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": user.id,
                "org": user.organization_id,
                "org_kind": account.organization_kind,
                "roles": list(user.roles),
                "iat": int(now.timestamp()),
                # Milliseconds, so a revocation and a new login within the same second are told apart.
                "iat_ms": int(now.timestamp() * 1000),
                "exp": int((now + domain.ACCESS_TOKEN_TTL).timestamp()),
                "jti": uuid.uuid4().hex,
                "sid": family_id,  # the login session: logout revokes its access tokens
            },
        )
        refresh_token = "rt_" + secrets.token_urlsafe(32)
        await uow.sessions.add(user.id, family_id, refresh_token, now + domain.REFRESH_TOKEN_TTL)
        await uow.users.update(user.id, last_login_at=now)
        return Session(
            user=replace(user, last_login_at=now),
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=int(domain.ACCESS_TOKEN_TTL.total_seconds()),
        )

    async def _mfa_challenge(self, uow: IdentityUnitOfWork, account: Account) -> str:
        now = self._now()
        key = await self._keys.signing_key(uow, now)
        return sign(
            key,
            {
                "iss": ISSUER,
                "aud": MFA_AUDIENCE,
                "sub": account.user.id,
                "iat": int(now.timestamp()),
                "exp": int((now + domain.MFA_CHALLENGE_TTL).timestamp()),
            },
        )

    async def verify_mfa(self, mfa_token: str, code: str) -> Session:
        user_id = verify_jwt(mfa_token, await self.jwks(), MFA_AUDIENCE, self._now().timestamp())
        async with self._uow() as uow:
            account = await uow.users.get(user_id, lock=True)
            user = account.user
            if user.active and await self._spend_totp(uow, account, code):
                result = await self._issue_session(uow, account)
                uow.record(
                    audit_event("auth.login_succeeded", target_type="user", target_id=user.id,
                                details={"mfa": "totp"}),
                    organization_id=user.organization_id, actor_id=user.id,
                )
                return result
            uow.record(
                audit_event("auth.mfa_failed", target_type="user", target_id=user.id, success=False),
                organization_id=user.organization_id, actor_id=user.id,
            )
        raise AuthenticationError("Wrong or already used MFA code", detail="MFA_CODE_INVALID")

    async def refresh(self, refresh_token: str) -> Session:
        if not refresh_token:
            raise ValidationError("refresh_token is required", field_violations=[("refresh_token", "required")])
        now = self._now()
        async with self._uow() as uow:
            token = await uow.sessions.by_secret(refresh_token, lock=True)
            if token is None or token.expires_at <= now:
                failure = AuthenticationError(
                    "Refresh token invalid or expired: log in again", detail="REFRESH_INVALID"
                )
            elif token.spent:
                # A spent token presented again means it leaked: end every session descended from it.
                await uow.sessions.revoke_family(token.family_id, now)
                account = await uow.users.get(token.user_id)
                self._revoke(
                    uow, PrincipalRevoked.LOGGED_OUT, actor=None,
                    organization_id=account.user.organization_id, session_id=token.family_id,
                )
                uow.record(
                    audit_event("auth.refresh_token_reused", target_type="session", target_id=token.family_id,
                                success=False, details={"effect": "family revoked"}),
                    organization_id=account.user.organization_id, actor_id=token.user_id,
                )
                failure = AuthenticationError(
                    "Refresh token already used: every session from this login was revoked; log in again",
                    detail="REFRESH_REUSED",
                )
            else:
                await uow.sessions.mark_used(token.id, now)
                account = await uow.users.get(token.user_id)
                if account.user.active:
                    return await self._issue_session(uow, account, family_id=token.family_id)
                failure = AuthenticationError("Account deactivated", detail="USER_INACTIVE")
        raise failure

    async def logout(self, principal: Principal, refresh_token: str) -> int:
        """Ends the caller's session (the one of `refresh_token`, and the one the access token belongs
        to), or every session of theirs when no refresh token is given; their access tokens die at once."""
        now = self._now()
        async with self._uow() as uow:
            family = await uow.sessions.family_of(refresh_token) if refresh_token else ""
            revoked = await uow.sessions.revoke_all(principal.subject, now, family_of=refresh_token)
            if refresh_token:
                for session_id in {family, principal.session_id} - {""}:
                    self._revoke(uow, PrincipalRevoked.LOGGED_OUT, actor=principal,
                                 organization_id=principal.organization_id, session_id=session_id)
            else:
                self._revoke(uow, PrincipalRevoked.LOGGED_OUT, actor=principal,
                             organization_id=principal.organization_id, user_id=principal.subject)
            uow.record(
                audit_event("auth.token_revoked", target_type="user", target_id=principal.subject,
                            details={"sessions": str(revoked)}),
                actor=principal,
            )
        return revoked

    # ---- signing keys ------------------------------------------------------------------------

    async def jwks(self) -> dict[str, Any]:
        async with self._uow() as uow:
            return await self._keys.jwks(uow)

    async def ensure_signing_key(self) -> None:
        async with self._uow() as uow:
            await self._keys.ensure_active(uow, self._now())

    async def rotate_signing_key(self, publish_ahead: timedelta) -> str:
        async with self._uow() as uow:
            kid = await self._keys.rotate(uow, self._now(), publish_ahead)
            await self._keys.retire_expired(uow, self._now(), domain.ACCESS_TOKEN_TTL)
            uow.record(audit_event("keys.rotated", target_type="signing_key", target_id=kid),
                       organization_id="", actor_id="")
            return kid


def verify_jwt(token: str, jwks: Mapping[str, Any], audience: str, now: float) -> str:
    """The subject of an MFA challenge; time is checked against the service clock, so tests can move it."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
        claims = jwt.decode(
            token, jwt.PyJWK(jwk).key, algorithms=["EdDSA"], audience=audience, issuer=ISSUER,
            options={"verify_exp": False, "verify_iat": False, "require": ["exp", "sub"]},
        )
        if claims["exp"] < now:
            raise jwt.ExpiredSignatureError("expired")
    except (jwt.PyJWTError, StopIteration) as exc:
        raise AuthenticationError("MFA challenge invalid or expired: log in again", detail="MFA_TOKEN_INVALID") from exc
    return str(claims["sub"])


def totp_step(secret: str, code: str, now: Any) -> int | None:
    """The time step the code belongs to (±1 step of clock drift), or None when it matches none."""
    if not secret or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    for drift in (0, -1, 1):
        at = now + timedelta(seconds=drift * totp.interval)
        if secrets.compare_digest(totp.at(at), code):
            return totp.timecode(at)
    return None
