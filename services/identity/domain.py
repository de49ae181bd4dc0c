"""Identity rules in plain Python: no I/O, so they are tested in microseconds and shared by every entrypoint."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.runtime.auth import ADMIN_ROLES, Principal
from services.runtime.errors import AuthorizationError, ValidationError

ACCESS_TOKEN_TTL = timedelta(minutes=15)
REFRESH_TOKEN_TTL = timedelta(days=7)
MFA_CHALLENGE_TTL = timedelta(minutes=5)
PASSWORD_RESET_TTL = timedelta(minutes=30)
MAX_FAILED_LOGINS = 5
LOCKOUT_DURATION = timedelta(minutes=30)
PASSWORD_HISTORY_DEPTH = 10
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256  # bounds the hashing work an attacker can ask for
MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254

ORGANIZATION_KINDS = ("PHARMA", "CRO", "PLATFORM")
# Which roles a member of each kind of organization may hold; the first is the default.
ROLES_BY_KIND: dict[str, tuple[str, ...]] = {
    "PHARMA": ("pharma_scientist", "pharma_admin"),
    "CRO": ("cro_technician", "cro_admin"),
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


def password_problems(password: str) -> list[str]:
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(f"at most {MAX_PASSWORD_LENGTH} characters")
    if not re.search(r"[a-z]", password):
        problems.append("a lowercase letter")
    if not re.search(r"[A-Z]", password):
        problems.append("an uppercase letter")
    if not re.search(r"\d", password):
        problems.append("a digit")
    if not re.search(r"[^A-Za-z0-9]", password):
        problems.append("a symbol")
    return problems


def check_password(password: str, field_name: str = "password") -> None:
    problems = password_problems(password)
    if problems:
        raise ValidationError(
            "Password is too weak: it needs " + ", ".join(problems),
            detail="WEAK_PASSWORD",
            field_violations=[(field_name, f"needs {p}") for p in problems],
        )


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
    return tuple(sorted(set(roles)))


def require_user_admin(principal: Principal, organization_id: str) -> None:
    """Org admins manage their own organization's users; system_admin manages everyone."""
    if principal.is_system_admin:
        return
    if organization_id != principal.organization_id or not principal.roles & ADMIN_ROLES:
        raise AuthorizationError("Only an administrator of this organization can manage its users")


def grantable_roles(principal: Principal, requested: tuple[str, ...]) -> tuple[str, ...]:
    """An API key never holds more than its creator."""
    if not requested:
        return tuple(sorted(principal.roles))
    excess = [r for r in requested if not principal.has_any_role(r)]
    if excess:
        raise AuthorizationError(f"You cannot grant roles you do not hold: {', '.join(excess)}")
    return tuple(sorted(set(requested)))


@dataclass(frozen=True)
class LoginFailure:
    failed_logins: int
    locked_until: datetime | None


def after_failed_login(failed_logins: int, now: datetime) -> LoginFailure:
    """The fifth failure in a row locks the account for 30 minutes and starts the count again."""
    failed = failed_logins + 1
    if failed >= MAX_FAILED_LOGINS:
        return LoginFailure(failed_logins=0, locked_until=now + LOCKOUT_DURATION)
    return LoginFailure(failed_logins=failed, locked_until=None)


def is_locked(locked_until: datetime | None, now: datetime) -> bool:
    return locked_until is not None and locked_until > now


@dataclass(frozen=True)
class AuditEntry:
    id: str
    sequence: int
    occurred_at: datetime
    source: str
    action: str
    outcome: str
    actor_id: str
    organization_id: str
    target_type: str
    target_id: str
    client_address: str
    request_id: str
    details: dict[str, str]
    hash: bytes = b""


GENESIS_HASH = bytes(32)


def audit_hash(previous: bytes, entry: AuditEntry) -> bytes:
    """Chains each entry to the one before: changing or deleting any entry changes every later hash."""
    canonical = json.dumps(
        [entry.id, entry.sequence, entry.occurred_at.isoformat(), entry.source, entry.action, entry.outcome,
         entry.actor_id, entry.organization_id, entry.target_type, entry.target_id, entry.client_address,
         entry.request_id, sorted(entry.details.items())],
        separators=(",", ":"),
    )
    return hashlib.sha256(previous + canonical.encode()).digest()


def first_broken_link(entries: list[AuditEntry]) -> int | None:
    """The sequence of the first entry whose hash does not follow from its predecessors, or None."""
    previous = GENESIS_HASH
    for entry in entries:
        if audit_hash(previous, entry) != entry.hash:
            return entry.sequence
        previous = entry.hash
    return None
