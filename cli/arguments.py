"""Argument parsing shared by the command groups: enum words, dates, and cutting long text for tables."""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Mapping
from typing import Any


def enum_choice(enum_type: Any, value: str, what: str, aliases: Mapping[str, int] | None = None) -> int:
    """The number of the enum value named `value` (any case, hyphens for underscores) or an alias."""
    word = value.strip()
    if aliases and word.lower() in aliases:
        return aliases[word.lower()]
    known = enum_type.DESCRIPTOR.values_by_name
    name = word.upper().replace("-", "_")
    if name in known and known[name].number:  # the *_UNSPECIFIED zero is no choice
        return int(known[name].number)
    choices = [*(aliases or {}), *(n.lower().replace("_", "-") for n, v in known.items() if v.number)]
    raise argparse.ArgumentTypeError(f"unknown {what} {value!r} (choose from {', '.join(choices)})")


def iso_date(value: str) -> str:
    """YYYY-MM-DD, checked here so a typo is a usage error rather than a round trip."""
    if not value.strip():
        return ""  # not given (argparse passes the default through here too)
    try:
        return datetime.date.fromisoformat(value.strip()).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
