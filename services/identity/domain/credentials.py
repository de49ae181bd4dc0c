"""Credentials: password policy, failed-login lockout, password-reset limits."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.runtime.errors import AuthenticationError, ValidationError

PASSWORD_RESET_TTL = timedelta(minutes=30)
# At most this many reset emails per account per window; further requests are answered the same
# way but send nothing, so a mailbox cannot be flooded and the answer still reveals nothing.
RESET_EMAILS_PER_WINDOW = 3
RESET_EMAIL_WINDOW = timedelta(hours=1)
MAX_FAILED_LOGINS = 5
LOCKOUT_DURATION = timedelta(minutes=30)
PASSWORD_HISTORY_DEPTH = 10
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256  # bounds the hashing work an attacker can ask for


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


def invalid_credentials() -> AuthenticationError:
    """The one answer to every failed login — unknown email, deactivated or locked account, wrong
    password — so the answer never tells which emails exist or which accounts are locked."""
    return AuthenticationError("Wrong email or password", detail="INVALID_CREDENTIALS")


def may_send_reset_email(sent_in_window: int) -> bool:
    return sent_in_window < RESET_EMAILS_PER_WINDOW
