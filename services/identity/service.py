"""The identity service layer: one place for every use case, shared by the gRPC servicer and the CLI tools.

Each use case runs in one unit of work; its audit event goes to the outbox in the same transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import jwt
import pyotp
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from molbridge.events.v1.audit_pb2 import AuditOutcome, AuditRecorded
from sqlalchemy.ext.asyncio import AsyncSession

from bus.outbox import add_event
from services.identity import domain
from services.identity.audit import entry_of
from services.identity.domain import ApiKey, AuditEntry, CreatedApiKey, Organization, Session, User, Violations
from services.identity.keys import KeyRing, sign
from services.identity.store import (
    SCHEMA,
    api_keys,
    audit_log,
    organizations,
    password_history,
    password_resets,
    refresh_tokens,
    users,
)
from services.runtime.auth import API_KEY_PREFIX, AUDIENCE, ISSUER, Principal
from services.runtime.context import client_address_var, request_id_var
from services.runtime.db import UnitOfWork, canonical_uuid, execute_unique
from services.runtime.email import EmailSender
from services.runtime.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PreconditionError,
    ValidationError,
)
from services.runtime.idempotency import idempotent
from services.runtime.pagination import PageRequest

MFA_AUDIENCE = "molbridge-mfa"
PLATFORM_ORGANIZATION = "Molbridge Platform"
USER_SORT_KEYS = {"email": users.c.email, "full_name": users.c.full_name, "created_at": users.c.created_at}


def _digest(secret: str) -> bytes:
    # Refresh tokens, reset tokens and API keys carry 256 random bits: a fast hash suffices.
    return hashlib.sha256(secret.encode()).digest()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Bootstrap:
    created: bool
    email: str = ""
    generated_password: str = ""


class IdentityService:
    def __init__(
        self,
        uow: UnitOfWork,
        keyring: KeyRing,
        email: EmailSender,
        *,
        public_url: str,
        clock: Callable[[], datetime] = _utcnow,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._uow = uow
        self._keys = keyring
        self._email = email
        self._public_url = public_url.rstrip("/")
        self._now = clock
        self._hasher = hasher or PasswordHasher()  # argon2id
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    # ---- passwords -------------------------------------------------------------------------

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def _matches(self, password_hash: str, password: str) -> bool:
        def verify() -> bool:
            try:
                return self._hasher.verify(password_hash, password)
            except (VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(verify)

    async def _check_history(self, session: AsyncSession, user_id: str, new_password: str) -> None:
        recent = await session.scalars(
            sa.select(password_history.c.password_hash)
            .where(password_history.c.user_id == user_id)
            .order_by(password_history.c.id.desc())
            .limit(domain.PASSWORD_HISTORY_DEPTH)
        )
        for old_hash in recent:
            if await self._matches(old_hash, new_password):
                raise ValidationError(
                    f"Choose a password you have not used for your last {domain.PASSWORD_HISTORY_DEPTH} changes",
                    detail="PASSWORD_REUSED",
                    field_violations=[("new_password", "used recently")],
                )

    async def _set_password(self, session: AsyncSession, user_id: str, new_password: str) -> None:
        new_hash = await self._hash(new_password)
        await session.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(password_hash=new_hash, failed_logins=0, locked_until=None, updated_at=self._now())
        )
        await session.execute(password_history.insert().values(user_id=user_id, password_hash=new_hash))

    # ---- audit -----------------------------------------------------------------------------

    async def _audit(
        self,
        session: AsyncSession,
        action: str,
        *,
        actor_id: str,
        organization_id: str,
        target_type: str,
        target_id: str,
        success: bool = True,
        details: Mapping[str, str] | None = None,
    ) -> None:
        event = AuditRecorded(
            action=action,
            outcome=AuditOutcome.AUDIT_OUTCOME_SUCCESS if success else AuditOutcome.AUDIT_OUTCOME_FAILURE,
            target_type=target_type,
            target_id=target_id,
            client_address=client_address_var.get(),
            request_id=request_id_var.get(),
            details=dict(details or {}),
        )
        await add_event(
            session, source="identity", payload=event, organization_id=organization_id, actor_id=actor_id,
            schema=SCHEMA,
        )

    # ---- loading ---------------------------------------------------------------------------

    async def _user_row(self, session: AsyncSession, user_id: str, *, lock: bool = False) -> Any:
        query = sa.select(users, organizations.c.kind.label("organization_kind")).join(organizations)
        query = query.where(users.c.id == canonical_uuid(user_id))
        row = (await session.execute(query.with_for_update(of=users) if lock else query)).first()
        if row is None:
            raise NotFoundError("User not found")
        return row

    async def _visible_user_row(self, session: AsyncSession, principal: Principal, user_id: str) -> Any:
        row = await self._user_row(session, user_id)
        if not principal.can_see_organization(row.organization_id):
            raise NotFoundError("User not found")  # another organization's user does not exist for you
        return row

    async def _organization(self, session: AsyncSession, organization_id: str) -> Organization:
        row = (
            await session.execute(sa.select(organizations).where(organizations.c.id == canonical_uuid(organization_id)))
        ).first()
        if row is None:
            raise NotFoundError("Organization not found")
        return Organization(id=row.id, name=row.name, kind=row.kind, created_at=row.created_at)

    # ---- sessions --------------------------------------------------------------------------

    async def _issue_session(self, session: AsyncSession, row: Any, family_id: str | None = None) -> Session:
        now = self._now()
        key = await self._keys.signing_key(session, now)
        access_token = sign(
            key,
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": row.id,
                "org": row.organization_id,
                "org_kind": row.organization_kind,
                "roles": list(row.roles),
                "iat": int(now.timestamp()),
                "exp": int((now + domain.ACCESS_TOKEN_TTL).timestamp()),
                "jti": uuid.uuid4().hex,
            },
        )
        refresh_token = "rt_" + secrets.token_urlsafe(32)
        await session.execute(
            refresh_tokens.insert().values(
                id=str(uuid.uuid4()),
                family_id=family_id or str(uuid.uuid4()),
                user_id=row.id,
                token_hash=_digest(refresh_token),
                expires_at=now + domain.REFRESH_TOKEN_TTL,
            )
        )
        await session.execute(users.update().where(users.c.id == row.id).values(last_login_at=now))
        return Session(
            user=replace(_user(row), last_login_at=now),
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=int(domain.ACCESS_TOKEN_TTL.total_seconds()),
        )

    async def login(self, email: str, password: str) -> Session:
        email = domain.normalize_email(email)
        if not email or not password:
            raise ValidationError(
                "Email and password are required",
                field_violations=[(f, "required") for f, v in (("email", email), ("password", password)) if not v],
            )
        if len(password) > domain.MAX_PASSWORD_LENGTH:
            raise AuthenticationError("Wrong email or password", detail="INVALID_CREDENTIALS")
        now = self._now()
        failure: AuthenticationError | None = None
        async with self._uow() as session:
            row = (
                await session.execute(
                    sa.select(users, organizations.c.kind.label("organization_kind"))
                    .join(organizations)
                    .where(users.c.email == email)
                    .with_for_update(of=users)
                )
            ).first()
            if row is None or not row.active:
                await self._matches(self._dummy_hash, password)  # same cost whether or not the email exists
                await self._audit(
                    session, "auth.login_failed", actor_id="", organization_id=row.organization_id if row else "",
                    target_type="user", target_id=row.id if row else "", success=False,
                    details={"email": email, "reason": "unknown or inactive user"},
                )
                failure = AuthenticationError("Wrong email or password", detail="INVALID_CREDENTIALS")
            elif domain.is_locked(row.locked_until, now):
                await self._audit(
                    session, "auth.login_failed", actor_id=row.id, organization_id=row.organization_id,
                    target_type="user", target_id=row.id, success=False, details={"reason": "account locked"},
                )
                minutes = max(1, math.ceil((row.locked_until - now).total_seconds() / 60))
                failure = AuthenticationError(
                    f"Account locked after {domain.MAX_FAILED_LOGINS} failed logins; try again in {minutes} "
                    "minutes or reset your password",
                    detail="ACCOUNT_LOCKED",
                    metadata={"locked_until": row.locked_until.isoformat()},
                )
            elif not await self._matches(row.password_hash, password):
                outcome = domain.after_failed_login(row.failed_logins, now)
                await session.execute(
                    users.update()
                    .where(users.c.id == row.id)
                    .values(failed_logins=outcome.failed_logins, locked_until=outcome.locked_until)
                )
                await self._audit(
                    session, "auth.login_failed", actor_id=row.id, organization_id=row.organization_id,
                    target_type="user", target_id=row.id, success=False, details={"reason": "wrong password"},
                )
                if outcome.locked_until is not None:
                    await self._audit(
                        session, "auth.account_locked", actor_id=row.id, organization_id=row.organization_id,
                        target_type="user", target_id=row.id, details={"until": outcome.locked_until.isoformat()},
                    )
                failure = AuthenticationError("Wrong email or password", detail="INVALID_CREDENTIALS")
            else:
                await session.execute(users.update().where(users.c.id == row.id).values(failed_logins=0))
                if row.mfa_enabled:
                    return Session(user=_user(row), mfa_token=await self._mfa_challenge(session, row))
                result = await self._issue_session(session, row)
                await self._audit(
                    session, "auth.login_succeeded", actor_id=row.id, organization_id=row.organization_id,
                    target_type="user", target_id=row.id,
                )
                return result
        raise failure

    async def _mfa_challenge(self, session: AsyncSession, row: Any) -> str:
        now = self._now()
        key = await self._keys.signing_key(session, now)
        return sign(
            key,
            {
                "iss": ISSUER,
                "aud": MFA_AUDIENCE,
                "sub": row.id,
                "iat": int(now.timestamp()),
                "exp": int((now + domain.MFA_CHALLENGE_TTL).timestamp()),
            },
        )

    async def verify_mfa(self, mfa_token: str, code: str) -> Session:
        async with self._uow() as session:
            jwks = await self._keys.jwks(session)
        user_id = _verify_jwt(mfa_token, jwks, MFA_AUDIENCE, self._now())
        failure: AuthenticationError | None = None
        async with self._uow() as session:
            row = await self._user_row(session, user_id, lock=True)
            step = _totp_step(row.mfa_secret or "", code, self._now())
            if not row.active or not row.mfa_enabled or step is None or step <= row.mfa_last_step:
                await self._audit(
                    session, "auth.mfa_failed", actor_id=row.id, organization_id=row.organization_id,
                    target_type="user", target_id=row.id, success=False,
                )
                failure = AuthenticationError("Wrong or already used MFA code", detail="MFA_CODE_INVALID")
            else:
                await session.execute(users.update().where(users.c.id == row.id).values(mfa_last_step=step))
                result = await self._issue_session(session, row)
                await self._audit(
                    session, "auth.login_succeeded", actor_id=row.id, organization_id=row.organization_id,
                    target_type="user", target_id=row.id, details={"mfa": "totp"},
                )
                return result
        raise failure

    async def refresh(self, refresh_token: str) -> Session:
        if not refresh_token:
            raise ValidationError("refresh_token is required", field_violations=[("refresh_token", "required")])
        now = self._now()
        failure: AuthenticationError | None = None
        async with self._uow() as session:
            token = (
                await session.execute(
                    sa.select(refresh_tokens)
                    .where(refresh_tokens.c.token_hash == _digest(refresh_token))
                    .with_for_update()
                )
            ).first()
            if token is None or token.expires_at <= now:
                failure = AuthenticationError(
                    "Refresh token invalid or expired: log in again", detail="REFRESH_INVALID"
                )
            elif token.used_at is not None or token.revoked_at is not None:
                # A spent token presented again means it leaked: end every session descended from it.
                await session.execute(
                    refresh_tokens.update()
                    .where(refresh_tokens.c.family_id == token.family_id, refresh_tokens.c.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
                row = await self._user_row(session, token.user_id)
                await self._audit(
                    session, "auth.refresh_token_reused", actor_id=token.user_id,
                    organization_id=row.organization_id, target_type="session", target_id=token.family_id,
                    success=False, details={"effect": "family revoked"},
                )
                failure = AuthenticationError(
                    "Refresh token already used: every session from this login was revoked; log in again",
                    detail="REFRESH_REUSED",
                )
            else:
                await session.execute(
                    refresh_tokens.update().where(refresh_tokens.c.id == token.id).values(used_at=now)
                )
                row = await self._user_row(session, token.user_id)
                if not row.active:
                    failure = AuthenticationError("Account deactivated", detail="USER_INACTIVE")
                else:
                    return await self._issue_session(session, row, family_id=token.family_id)
        raise failure

    async def logout(self, principal: Principal, refresh_token: str) -> int:
        now = self._now()
        async with self._uow() as session:
            query = refresh_tokens.update().where(
                refresh_tokens.c.user_id == principal.subject, refresh_tokens.c.revoked_at.is_(None)
            )
            if refresh_token:
                family = sa.select(refresh_tokens.c.family_id).where(
                    refresh_tokens.c.token_hash == _digest(refresh_token)
                )
                query = query.where(refresh_tokens.c.family_id.in_(family.scalar_subquery()))
            result = await session.execute(query.values(revoked_at=now))
            revoked = result.rowcount or 0  # type: ignore[attr-defined]
            await self._audit(
                session, "auth.token_revoked", actor_id=principal.subject,
                organization_id=principal.organization_id, target_type="user", target_id=principal.subject,
                details={"sessions": str(revoked)},
            )
        return revoked

    # ---- password reset --------------------------------------------------------------------

    async def request_password_reset(self, email: str) -> None:
        email = domain.normalize_email(email)
        violations = Violations()
        domain.check_email(email, violations)
        violations.raise_if_any("A valid email is required")
        token = secrets.token_urlsafe(32)
        async with self._uow() as session:
            row = (await session.execute(sa.select(users).where(users.c.email == email))).first()
            if row is None or not row.active:
                return  # same answer either way: emails cannot be probed
            await session.execute(
                password_resets.insert().values(
                    token_hash=_digest(token), user_id=row.id, expires_at=self._now() + domain.PASSWORD_RESET_TTL
                )
            )
            await self._audit(
                session, "auth.password_reset_requested", actor_id=row.id, organization_id=row.organization_id,
                target_type="user", target_id=row.id,
            )
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
        await self._email.send(message)

    async def confirm_password_reset(self, token: str, new_password: str) -> None:
        domain.check_password(new_password, "new_password")
        now = self._now()
        async with self._uow() as session:
            reset = (
                await session.execute(
                    sa.select(password_resets).where(password_resets.c.token_hash == _digest(token)).with_for_update()
                )
            ).first()
            if reset is None or reset.used_at is not None or reset.expires_at <= now:
                raise ValidationError(
                    "Reset token invalid, used or expired: request a new one",
                    detail="RESET_TOKEN_INVALID",
                    field_violations=[("token", "invalid, used or expired")],
                )
            row = await self._user_row(session, reset.user_id, lock=True)
            await self._check_history(session, row.id, new_password)
            await self._set_password(session, row.id, new_password)
            await session.execute(
                password_resets.update().where(password_resets.c.token_hash == reset.token_hash).values(used_at=now)
            )
            await _revoke_sessions(session, row.id, now)
            await self._audit(
                session, "auth.password_reset", actor_id=row.id, organization_id=row.organization_id,
                target_type="user", target_id=row.id,
            )

    # ---- MFA -------------------------------------------------------------------------------

    async def enroll_mfa(self, principal: Principal) -> tuple[str, str]:
        _require_user(principal)
        secret = pyotp.random_base32()
        async with self._uow() as session:
            row = await self._user_row(session, principal.subject, lock=True)
            if row.mfa_enabled:
                raise PreconditionError("MFA is already enabled for this account", detail="MFA_ALREADY_ENABLED")
            await session.execute(users.update().where(users.c.id == row.id).values(mfa_secret=secret))
        return secret, pyotp.TOTP(secret).provisioning_uri(name=row.email, issuer_name="Molbridge")

    async def confirm_mfa(self, principal: Principal, code: str) -> User:
        _require_user(principal)
        async with self._uow() as session:
            row = await self._user_row(session, principal.subject, lock=True)
            if not row.mfa_secret:
                raise PreconditionError("Start with POST /api/v1/auth/mfa/enroll", detail="MFA_NOT_ENROLLED")
            step = _totp_step(row.mfa_secret, code, self._now())
            if step is None:
                raise ValidationError("Wrong MFA code", field_violations=[("code", "does not match")])
            await session.execute(
                users.update().where(users.c.id == row.id).values(mfa_enabled=True, mfa_last_step=step)
            )
            await self._audit(
                session, "auth.mfa_enabled", actor_id=row.id, organization_id=row.organization_id,
                target_type="user", target_id=row.id,
            )
            return _user(await self._user_row(session, row.id))

    # ---- keys ------------------------------------------------------------------------------

    async def jwks(self) -> dict[str, Any]:
        async with self._uow() as session:
            return await self._keys.jwks(session)

    async def ensure_signing_key(self) -> None:
        async with self._uow() as session:
            await self._keys.ensure_active(session, self._now())

    async def rotate_signing_key(self, publish_ahead: timedelta) -> str:
        async with self._uow() as session:
            kid = await self._keys.rotate(session, self._now(), publish_ahead)
            await self._keys.retire_expired(session, self._now(), domain.ACCESS_TOKEN_TTL)
            await self._audit(
                session, "keys.rotated", actor_id="", organization_id="", target_type="signing_key", target_id=kid
            )
            return kid

    # ---- organizations ---------------------------------------------------------------------

    async def create_organization(self, principal: Principal, name: str, kind: str, request_id: str) -> Organization:
        principal.require_any_role("system_admin")
        violations = Violations()
        domain.check_name(name, "name", violations)
        if kind not in ("PHARMA", "CRO"):
            violations.add("kind", "must be ORGANIZATION_KIND_PHARMA or ORGANIZATION_KIND_CRO")
        violations.raise_if_any("Invalid organization")

        async with self._uow() as session:

            async def create() -> str:
                organization_id = str(uuid.uuid4())
                await execute_unique(
                    session, organizations.insert().values(id=organization_id, name=name.strip(), kind=kind),
                    ConflictError(f"An organization named '{name.strip()}' already exists"),
                )
                await self._audit(
                    session, "organization.created", actor_id=principal.subject,
                    organization_id=organization_id, target_type="organization", target_id=organization_id,
                    details={"name": name.strip(), "kind": kind},
                )
                return organization_id

            created_id = await idempotent(session, f"{principal.subject}:CreateOrganization", request_id, create)
            return await self._organization(session, created_id)

    async def list_organizations(self, principal: Principal, page: PageRequest) -> tuple[list[Organization], int]:
        query = sa.select(organizations)
        if not principal.is_system_admin:
            query = query.where(organizations.c.id == principal.organization_id)
        async with self._uow() as session:
            total = await session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
            rows = await session.execute(
                query.order_by(organizations.c.name).limit(page.page_size).offset(page.offset)
            )
            return [Organization(id=r.id, name=r.name, kind=r.kind, created_at=r.created_at) for r in rows], total

    async def get_organization(self, principal: Principal, organization_id: str) -> Organization:
        if not principal.can_see_organization(organization_id):
            raise NotFoundError("Organization not found")
        async with self._uow() as session:
            return await self._organization(session, organization_id)

    # ---- users -----------------------------------------------------------------------------

    async def bootstrap_admin(self, email: str, password: str) -> Bootstrap:
        """First start: a platform organization and one system admin, when no user exists yet."""
        async with self._uow() as session:
            await session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("identity:bootstrap"))))
            if await session.scalar(sa.select(sa.func.count()).select_from(users)):
                return Bootstrap(created=False)
            email = domain.normalize_email(email or "admin@molbridge.local")
            generated = "" if password else _strong_password()
            password = password or generated
            domain.check_password(password, "MOLBRIDGE_ADMIN_PASSWORD")
            organization_id = str(uuid.uuid4())
            await session.execute(
                organizations.insert().values(id=organization_id, name=PLATFORM_ORGANIZATION, kind="PLATFORM")
            )
            user_id = str(uuid.uuid4())
            await self._insert_user(session, user_id, email, "Platform administrator", organization_id,
                                    ("system_admin",), password)
            await self._audit(
                session, "user.created", actor_id="", organization_id=organization_id, target_type="user",
                target_id=user_id, details={"bootstrap": "true"},
            )
            return Bootstrap(created=True, email=email, generated_password=generated)

    async def _insert_user(
        self, session: AsyncSession, user_id: str, email: str, full_name: str, organization_id: str,
        roles: Sequence[str], password: str,
    ) -> None:
        password_hash = await self._hash(password)
        await execute_unique(
            session,
            users.insert().values(
                id=user_id, email=email, full_name=full_name.strip(), organization_id=organization_id,
                roles=list(roles), password_hash=password_hash,
            ),
            ConflictError(f"A user with email {email} already exists"),
        )
        await session.execute(password_history.insert().values(user_id=user_id, password_hash=password_hash))

    async def create_user(
        self, principal: Principal, *, email: str, full_name: str, password: str, roles: Sequence[str],
        organization_id: str, request_id: str,
    ) -> User:
        organization_id = organization_id or principal.organization_id
        domain.require_user_admin(principal, organization_id)
        email = domain.normalize_email(email)
        async with self._uow() as session:
            organization = await self._organization(session, organization_id)
            violations = Violations()
            domain.check_email(email, violations)
            domain.check_name(full_name, "full_name", violations)
            checked_roles = domain.check_roles(tuple(roles), organization.kind, violations)
            violations.raise_if_any("Invalid user")
            domain.check_password(password)

            async def create() -> str:
                user_id = str(uuid.uuid4())
                await self._insert_user(session, user_id, email, full_name, organization_id, checked_roles, password)
                await self._audit(
                    session, "user.created", actor_id=principal.subject, organization_id=organization_id,
                    target_type="user", target_id=user_id, details={"roles": ",".join(checked_roles)},
                )
                return user_id

            user_id = await idempotent(session, f"{principal.subject}:CreateUser", request_id, create)
            return _user(await self._user_row(session, user_id))

    async def list_users(
        self, principal: Principal, page: PageRequest, organization_id: str, sort: str
    ) -> tuple[list[User], int]:
        if organization_id and organization_id != principal.organization_id and not principal.is_system_admin:
            raise NotFoundError("Organization not found")
        organization_id = organization_id or principal.organization_id
        column = USER_SORT_KEYS.get(sort.lstrip("-") or "email")
        if column is None:
            raise ValidationError(
                "Unknown sort key",
                field_violations=[("sort", f"one of {', '.join(USER_SORT_KEYS)}, '-' for descending")],
            )
        order = column.desc() if sort.startswith("-") else column.asc()
        query = (
            sa.select(users, organizations.c.kind.label("organization_kind"))
            .join(organizations)
            .where(users.c.organization_id == canonical_uuid(organization_id))
        )
        async with self._uow() as session:
            total = await session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
            rows = await session.execute(query.order_by(order, users.c.id).limit(page.page_size).offset(page.offset))
            return [_user(r) for r in rows], total

    async def get_me(self, principal: Principal) -> User:
        _require_user(principal)
        async with self._uow() as session:
            return _user(await self._user_row(session, principal.subject))

    async def get_user(self, principal: Principal, user_id: str) -> User:
        async with self._uow() as session:
            return _user(await self._visible_user_row(session, principal, user_id))

    async def update_me(self, principal: Principal, full_name: str) -> User:
        _require_user(principal)
        violations = Violations()
        domain.check_name(full_name, "full_name", violations)
        violations.raise_if_any("Invalid profile")
        async with self._uow() as session:
            await session.execute(
                users.update().where(users.c.id == principal.subject)
                .values(full_name=full_name.strip(), updated_at=self._now())
            )
            await self._audit(
                session, "user.updated", actor_id=principal.subject, organization_id=principal.organization_id,
                target_type="user", target_id=principal.subject, details={"fields": "full_name"},
            )
            return _user(await self._user_row(session, principal.subject))

    async def change_password(self, principal: Principal, current_password: str, new_password: str) -> None:
        _require_user(principal)
        domain.check_password(new_password, "new_password")
        async with self._uow() as session:
            row = await self._user_row(session, principal.subject, lock=True)
            if not await self._matches(row.password_hash, current_password):
                raise ValidationError(
                    "Current password is wrong", detail="WRONG_PASSWORD",
                    field_violations=[("current_password", "does not match")],
                )
            await self._check_history(session, row.id, new_password)
            await self._set_password(session, row.id, new_password)
            await self._audit(
                session, "user.password_changed", actor_id=row.id, organization_id=row.organization_id,
                target_type="user", target_id=row.id,
            )

    async def update_user(
        self, principal: Principal, user_id: str, *, full_name: str, roles: Sequence[str], unlock: bool
    ) -> User:
        async with self._uow() as session:
            row = await self._visible_user_row(session, principal, user_id)
            domain.require_user_admin(principal, row.organization_id)
            violations = Violations()
            domain.check_name(full_name, "full_name", violations, required=False)
            changes: dict[str, Any] = {"updated_at": self._now()}
            if full_name.strip():
                changes["full_name"] = full_name.strip()
            if roles:
                changes["roles"] = list(domain.check_roles(tuple(roles), row.organization_kind, violations))
            if unlock:
                changes.update(failed_logins=0, locked_until=None)
            violations.raise_if_any("Invalid user")
            await session.execute(users.update().where(users.c.id == row.id).values(**changes))
            await self._audit(
                session, "user.updated", actor_id=principal.subject, organization_id=row.organization_id,
                target_type="user", target_id=row.id,
                details={"fields": ",".join(sorted(k for k in changes if k != "updated_at"))},
            )
            return _user(await self._user_row(session, row.id))

    async def delete_user(self, principal: Principal, user_id: str) -> User:
        now = self._now()
        async with self._uow() as session:
            row = await self._visible_user_row(session, principal, user_id)
            domain.require_user_admin(principal, row.organization_id)
            if row.id == principal.subject:
                raise PreconditionError("You cannot delete your own account", detail="SELF_DELETE")
            await session.execute(users.update().where(users.c.id == row.id).values(active=False, updated_at=now))
            await _revoke_sessions(session, row.id, now)
            await self._audit(
                session, "user.deleted", actor_id=principal.subject, organization_id=row.organization_id,
                target_type="user", target_id=row.id,
            )
            return _user(await self._user_row(session, row.id))

    # ---- API keys --------------------------------------------------------------------------

    async def create_api_key(self, principal: Principal, name: str, roles: Sequence[str]) -> CreatedApiKey:
        _require_user(principal)
        domain.require_user_admin(principal, principal.organization_id)
        violations = Violations()
        domain.check_name(name, "name", violations)
        violations.raise_if_any("Invalid API key")
        granted = domain.grantable_roles(principal, tuple(roles))
        secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = str(uuid.uuid4())
        async with self._uow() as session:
            await session.execute(
                api_keys.insert().values(
                    id=key_id, name=name.strip(), organization_id=principal.organization_id, roles=list(granted),
                    prefix=secret[:12], secret_hash=_digest(secret), created_by=principal.subject,
                )
            )
            await self._audit(
                session, "api_key.created", actor_id=principal.subject, organization_id=principal.organization_id,
                target_type="api_key", target_id=key_id, details={"roles": ",".join(granted)},
            )
            return CreatedApiKey(api_key=await self._api_key(session, key_id), secret=secret)

    async def _api_key(self, session: AsyncSession, key_id: str) -> ApiKey:
        row = (await session.execute(sa.select(api_keys).where(api_keys.c.id == canonical_uuid(key_id)))).first()
        if row is None:
            raise NotFoundError("API key not found")
        return _api_key(row)

    async def list_api_keys(self, principal: Principal, page: PageRequest) -> tuple[list[ApiKey], int]:
        domain.require_user_admin(principal, principal.organization_id)
        query = sa.select(api_keys).where(api_keys.c.organization_id == principal.organization_id)
        async with self._uow() as session:
            total = await session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
            rows = await session.execute(
                query.order_by(api_keys.c.created_at.desc()).limit(page.page_size).offset(page.offset)
            )
            return [_api_key(r) for r in rows], total

    async def revoke_api_key(self, principal: Principal, key_id: str) -> ApiKey:
        async with self._uow() as session:
            key = await self._api_key(session, key_id)
            if not principal.can_see_organization(key.organization_id):
                raise NotFoundError("API key not found")
            domain.require_user_admin(principal, key.organization_id)
            await session.execute(
                api_keys.update().where(api_keys.c.id == key.id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._now())
            )
            await self._audit(
                session, "api_key.revoked", actor_id=principal.subject, organization_id=key.organization_id,
                target_type="api_key", target_id=key.id,
            )
            return await self._api_key(session, key.id)

    async def resolve_api_key(self, secret: str) -> Principal:
        if not secret.startswith(API_KEY_PREFIX) or len(secret) > 100:
            raise AuthenticationError("Invalid API key", detail="API_KEY_INVALID")
        now = self._now()
        async with self._uow() as session:
            row = (
                await session.execute(
                    sa.select(api_keys, organizations.c.kind.label("organization_kind"))
                    .join(organizations)
                    .where(api_keys.c.secret_hash == _digest(secret))
                )
            ).first()
            if row is None or row.revoked_at is not None:
                raise AuthenticationError("Invalid or revoked API key", detail="API_KEY_INVALID")
            if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
                await session.execute(api_keys.update().where(api_keys.c.id == row.id).values(last_used_at=now))
        return Principal(
            subject=row.id, organization_id=row.organization_id, organization_kind=row.organization_kind,
            roles=frozenset(row.roles), via="api_key",
        )


    # ---- audit trail -----------------------------------------------------------------------

    async def list_audit_events(
        self, principal: Principal, page: PageRequest, *, action: str, target_id: str, organization_id: str
    ) -> tuple[list[AuditEntry], int]:
        query = sa.select(audit_log)
        if principal.has_any_role("auditor"):  # platform auditors and system admins read every organization
            if organization_id:
                query = query.where(audit_log.c.organization_id == organization_id)
        else:
            domain.require_user_admin(principal, principal.organization_id)
            query = query.where(audit_log.c.organization_id == principal.organization_id)
        if action:
            query = query.where(audit_log.c.action.startswith(action, autoescape=True))
        if target_id:
            query = query.where(audit_log.c.target_id == target_id)
        async with self._uow() as session:
            total = await session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
            rows = await session.execute(
                query.order_by(audit_log.c.sequence.desc()).limit(page.page_size).offset(page.offset)
            )
            return [entry_of(r) for r in rows], total

    async def audit_trail(self) -> list[AuditEntry]:
        """The whole trail in order, for verification (operators; tests)."""
        async with self._uow() as session:
            return [entry_of(r) for r in await session.execute(sa.select(audit_log).order_by(audit_log.c.sequence))]


# ---- helpers ---------------------------------------------------------------------------------


def _require_user(principal: Principal) -> None:
    if principal.via != "token":
        raise PreconditionError("This action needs a user's login, not an API key", detail="USER_REQUIRED")


async def _revoke_sessions(session: AsyncSession, user_id: str, now: datetime) -> None:
    """Ends every session of a user (password reset, deactivation)."""
    await session.execute(
        refresh_tokens.update()
        .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def _user(row: Any) -> User:
    return User(
        id=row.id, email=row.email, full_name=row.full_name, organization_id=row.organization_id,
        roles=tuple(row.roles), active=row.active, mfa_enabled=row.mfa_enabled, locked_until=row.locked_until,
        created_at=row.created_at, updated_at=row.updated_at, last_login_at=row.last_login_at,
    )


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id, name=row.name, organization_id=row.organization_id, roles=tuple(row.roles), prefix=row.prefix,
        created_by=row.created_by, created_at=row.created_at, revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def _verify_jwt(token: str, jwks: Mapping[str, Any], audience: str, now: datetime) -> str:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
        # Time is checked against the service clock, not the library's, so tests can move it.
        claims = jwt.decode(
            token, jwt.PyJWK(jwk).key, algorithms=["EdDSA"], audience=audience, issuer=ISSUER,
            options={"verify_exp": False, "verify_iat": False, "require": ["exp", "sub"]},
        )
        if claims["exp"] < now.timestamp():
            raise jwt.ExpiredSignatureError("expired")
    except (jwt.PyJWTError, StopIteration) as exc:
        raise AuthenticationError("MFA challenge invalid or expired: log in again", detail="MFA_TOKEN_INVALID") from exc
    return str(claims["sub"])


def _totp_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step the code belongs to (±1 step of clock drift), or None when it matches none."""
    if not secret or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    for drift in (0, -1, 1):
        at = now + timedelta(seconds=drift * totp.interval)
        if secrets.compare_digest(totp.at(at), code):
            return totp.timecode(at)
    return None


def _strong_password() -> str:
    return secrets.token_urlsafe(18) + "aA1!"
