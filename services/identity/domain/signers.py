"""Electronic signatures (21 CFR 11.200): who may sign and what the signature record prints."""

from __future__ import annotations

from dataclasses import dataclass

from services.identity.domain.accounts import User
from services.identity.domain.credentials import LOCKOUT_DURATION
from services.runtime.auth import Principal
from services.runtime.errors import AuthenticationError, AuthorizationError


@dataclass(frozen=True)
class Signer:
    """A user whose password (and MFA code) were just checked again, as a signature prints them."""

    user_id: str
    printed_name: str
    email: str
    organization_id: str
    roles: tuple[str, ...]


def require_person(principal: Principal) -> None:
    """A signature is bound to one person (11.100): an API key acts for a program, never signs."""
    if principal.via != "token":
        raise AuthorizationError(
            "Electronic signatures need a person: sign in with your own account, not an API key",
            detail="SIGNER_NOT_A_PERSON",
        )


def signer_of(user: User) -> Signer:
    return Signer(
        user_id=user.id,
        printed_name=user.full_name.strip() or user.email,
        email=user.email,
        organization_id=user.organization_id,
        roles=tuple(sorted(user.roles)),
    )


def signer_not_confirmed(locked: bool) -> AuthenticationError:
    """The caller is already known by their token, so unlike a login the answer may say the account is locked."""
    if locked:
        return AuthenticationError(
            f"Too many failed attempts: the account is locked for {LOCKOUT_DURATION.seconds // 60} minutes",
            detail="ACCOUNT_LOCKED",
        )
    return AuthenticationError(
        "Wrong password or MFA code: repeated failures lock the account", detail="SIGNER_NOT_CONFIRMED"
    )
