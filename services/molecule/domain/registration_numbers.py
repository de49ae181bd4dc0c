"""Registration numbers: `<PREFIX>-000123`, unique in an organization, issued in order, never reused.

Pure rules (no I/O): the number's format, the prefix's shape and default, and how a number
typed by a person is read back (case and surrounding spaces do not matter).
"""

from __future__ import annotations

import re

from services.runtime.errors import ValidationError

PREFIX_ROLES = ("pharma_admin",)  # and system_admin, who may do anything
DEFAULT_PREFIX = "MOL"  # when the organization's name gives none
DIGITS = 6  # zero-padded to six digits; a seventh appears after 999999 rather than wrapping
PREFIX_MIN, PREFIX_MAX = 2, 8
_PREFIX = re.compile(rf"^[A-Z][A-Z0-9]{{{PREFIX_MIN - 1},{PREFIX_MAX - 1}}}$")
_NUMBER = re.compile(rf"^[A-Z][A-Z0-9]{{{PREFIX_MIN - 1},{PREFIX_MAX - 1}}}-\d{{{DIGITS},}}$")


def format_number(prefix: str, value: int) -> str:
    """The number a molecule shows, e.g. format_number("ACME", 123) == "ACME-000123"."""
    if value < 1:
        raise ValueError(f"registration numbers start at 1, not {value}")
    return f"{prefix}-{value:0{DIGITS}d}"


def validate_prefix(text: str) -> str:
    """The prefix as stored (upper case), or a ValidationError naming the rule."""
    prefix = text.strip().upper()
    if not _PREFIX.match(prefix):
        raise ValidationError(
            f"Invalid registration prefix {text[:40]!r}: {PREFIX_MIN}–{PREFIX_MAX} letters or digits, "
            "starting with a letter (e.g. ACME)",
            field_violations=[("prefix", f"{PREFIX_MIN}–{PREFIX_MAX} letters or digits, starting with a letter")],
        )
    return prefix


def default_prefix(organization_name: str) -> str:
    """The prefix an organization starts with: its name's first word, letters and digits upper case,
    cut to PREFIX_MAX ("Acme Pharma" → "ACME"); DEFAULT_PREFIX when that is no valid prefix ("3M", "")."""
    for word in organization_name.split():
        candidate = re.sub(r"[^A-Za-z0-9]", "", word).upper()[:PREFIX_MAX]
        if candidate:
            return candidate if _PREFIX.match(candidate) else DEFAULT_PREFIX
    return DEFAULT_PREFIX


def normalize_number(text: str) -> str | None:
    """A typed registration number in its stored form ("acme-000123 " → "ACME-000123"), or None when
    it has not the shape of one (it may still be an alias)."""
    candidate = text.strip().upper()
    return candidate if _NUMBER.match(candidate) else None
