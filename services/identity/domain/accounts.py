"""Accounts: organizations, users, sessions, API keys and the rules for creating and managing them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.runtime.auth import ADMIN_ROLES, ROLE_IMPLIES, Principal
from services.runtime.errors import AuthenticationError, AuthorizationError, ValidationError

ACCESS_TOKEN_TTL = timedelta(minutes=15)
REFRESH_TOKEN_TTL = timedelta(days=7)
MFA_CHALLENGE_TTL = timedelta(minutes=5)
MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254

ORGANIZATION_KINDS = ("PHARMA", "CRO", "PLATFORM")
# Which roles a member of each kind of organization may hold; the first is the default. Every kind
# has auditors: read-only, they read their organization's audit trail (the platform's: every one).
ROLES_BY_KIND: dict[str, tuple[str, ...]] = {
    "PHARMA": ("pharma_scientist", "pharma_admin", "auditor"),
    "CRO": ("cro_technician", "cro_admin", "auditor"),
    "PLATFORM": ("auditor", "system_admin"),
}

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class Organization:
    id: str
    name: str
    kind: str
    created_at: datetime


@dataclass(frozen=True)
class User:
    id: str
    email: str
    full_name: str
    organization_id: str
    roles: tuple[str, ...]
    active: bool
    mfa_enabled: bool
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None


@dataclass(frozen=True)
class Account:
    """A user with what only the credential checks see (never mapped to the wire)."""

    user: User
    organization_kind: str
    password_hash: str
    failed_logins: int
    mfa_secret: str | None
    mfa_last_step: int

    def acting_principal(self, principal: Principal) -> Principal:
        """The caller as the account stands now: a deleted user is refused, a demoted one acts with
        the roles they hold today, whatever their (up to 15 minutes old) token says."""
        if not self.user.active:
            raise AuthenticationError("This account was deactivated: log in again", detail="TOKEN_REVOKED")
        return Principal(
            subject=principal.subject, organization_id=self.user.organization_id,
            organization_kind=self.organization_kind, roles=frozenset(self.user.roles), via=principal.via,
            session_id=principal.session_id,
        )


@dataclass(frozen=True)
class Session:
    user: User
    access_token: str = ""
    refresh_token: str = ""
    expires_in: int = 0
    mfa_token: str = ""

    @property
    def mfa_required(self) -> bool:
        return bool(self.mfa_token)


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    organization_id: str
    roles: tuple[str, ...]
    prefix: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


@dataclass(frozen=True)
class KeyHolder:
    """An API key as verification sees it: its own roles and the creator's standing today."""

    key: ApiKey
    organization_kind: str
    creator_active: bool
    creator_roles: tuple[str, ...]

    def principal(self) -> Principal | None:
        """The key acts with at most its creator's current roles; a deleted creator's keys, and keys
        left with no role, do not work."""
        if self.key.revoked_at is not None or not self.creator_active:
            return None
        roles = frozenset(r for r in self.key.roles if holds_role(self.creator_roles, r))
        if not roles:
            return None
        return Principal(
            subject=self.key.id, organization_id=self.key.organization_id,
            organization_kind=self.organization_kind, roles=roles, via="api_key",
        )


@dataclass(frozen=True)
class CreatedApiKey:
    api_key: ApiKey
    secret: str


@dataclass
class Violations:
    """Collects every problem with an input so the caller learns them all at once."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, field_name: str, problem: str) -> None:
        self.items.append((field_name, problem))

    def raise_if_any(self, message: str) -> None:
        if self.items:
            raise ValidationError(message, field_violations=self.items)


def normalize_email(email: str) -> str:
    return email.strip().lower()


def check_email(email: str, violations: Violations) -> None:
    if not email:
        violations.add("email", "required")
    elif len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        violations.add("email", "not a valid email address")


def check_name(value: str, field_name: str, violations: Violations, *, required: bool = True) -> None:
    if required and not value.strip():
        violations.add(field_name, "required")
    elif len(value) > MAX_NAME_LENGTH:
        violations.add(field_name, f"at most {MAX_NAME_LENGTH} characters")


def check_roles(roles: tuple[str, ...], organization_kind: str, violations: Violations) -> tuple[str, ...]:
    """Roles must fit the organization's kind; no roles means the kind's default."""
    allowed = ROLES_BY_KIND[organization_kind]
    if not roles:
        return (allowed[0],)
    for role in roles:
        if role not in allowed:
            violations.add(
                "roles", f"'{role}' is not a role of a {organization_kind} organization (allowed: {', '.join(allowed)})"
            )
    if "auditor" in roles and len(set(roles)) > 1:
        violations.add("roles", "an auditor is read-only: 'auditor' cannot be combined with another role")
    return tuple(sorted(set(roles)))


def require_user_admin(principal: Principal, organization_id: str) -> None:
    """Org admins manage their own organization's users; system_admin manages everyone."""
    if principal.is_system_admin:
        return
    if organization_id != principal.organization_id or not principal.roles & ADMIN_ROLES:
        raise AuthorizationError("Only an administrator of this organization can manage its users")


def holds_role(roles: tuple[str, ...] | frozenset[str], role: str) -> bool:
    """Whether someone with `roles` holds `role`, directly, by implication, or as system_admin."""
    return "system_admin" in roles or role in roles or any(role in ROLE_IMPLIES.get(r, ()) for r in roles)


def require_user(principal: Principal) -> None:
    if principal.via != "token":
        # A valid credential that may not do this (403), not a state of the resource (409).
        raise AuthorizationError("This action needs a user's login, not an API key", detail="USER_REQUIRED")


def roles_changed(before: tuple[str, ...], after: tuple[str, ...]) -> bool:
    return set(before) != set(after)


def grantable_roles(principal: Principal, requested: tuple[str, ...]) -> tuple[str, ...]:
    """An API key never holds more than its creator."""
    if not requested:
        return tuple(sorted(principal.roles))
    excess = [r for r in requested if not principal.has_any_role(r)]
    if excess:
        raise AuthorizationError(f"You cannot grant roles you do not hold: {', '.join(excess)}")
    return tuple(sorted(set(requested)))
