"""Identity rules in plain Python: no I/O, so they are tested in microseconds and shared by every entrypoint."""

from services.identity.domain.accounts import (
    ACCESS_TOKEN_TTL,
    MAX_EMAIL_LENGTH,
    MAX_NAME_LENGTH,
    MFA_CHALLENGE_TTL,
    ORGANIZATION_KINDS,
    REFRESH_TOKEN_TTL,
    ROLES_BY_KIND,
    Account,
    ApiKey,
    CreatedApiKey,
    KeyHolder,
    Organization,
    Session,
    User,
    Violations,
    check_email,
    check_name,
    check_roles,
    grantable_roles,
    holds_role,
    normalize_email,
    require_user,
    require_user_admin,
    roles_changed,
)
from services.identity.domain.audit import GENESIS_HASH, AuditEntry, audit_hash, first_broken_link
from services.identity.domain.credentials import (
    LOCKOUT_DURATION,
    MAX_FAILED_LOGINS,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    PASSWORD_HISTORY_DEPTH,
    PASSWORD_RESET_TTL,
    RESET_EMAIL_WINDOW,
    RESET_EMAILS_PER_WINDOW,
    LoginFailure,
    after_failed_login,
    check_password,
    invalid_credentials,
    is_locked,
    may_send_reset_email,
    password_problems,
)
from services.identity.domain.signers import Signer, require_person, signer_not_confirmed, signer_of

__all__ = [
    "ACCESS_TOKEN_TTL", "GENESIS_HASH", "LOCKOUT_DURATION", "MAX_EMAIL_LENGTH", "MAX_FAILED_LOGINS",
    "MAX_NAME_LENGTH", "MAX_PASSWORD_LENGTH", "MFA_CHALLENGE_TTL", "MIN_PASSWORD_LENGTH", "ORGANIZATION_KINDS",
    "PASSWORD_HISTORY_DEPTH", "PASSWORD_RESET_TTL", "REFRESH_TOKEN_TTL", "RESET_EMAILS_PER_WINDOW",
    "RESET_EMAIL_WINDOW", "ROLES_BY_KIND", "Account", "ApiKey", "AuditEntry", "CreatedApiKey", "KeyHolder",
    "LoginFailure", "Organization", "Session", "Signer", "User", "Violations", "after_failed_login", "audit_hash",
    "check_email", "check_name", "check_password", "check_roles", "first_broken_link", "grantable_roles",
    "holds_role", "invalid_credentials", "is_locked", "may_send_reset_email", "normalize_email",
    "password_problems", "require_person", "require_user", "require_user_admin", "roles_changed",
    "signer_not_confirmed", "signer_of",
]
