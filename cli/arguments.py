"""Argument parsing shared by the command groups: enum words, dates, COLUMN=VALUE options, and cutting long
text for tables."""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from cli.client import CliError


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


def column_values(values: Sequence[str], option: str, form: str, example: str) -> dict[str, str]:
    """`--option COLUMN=VALUE` values as {column: value}, both sides stripped. The last `=` splits (column
    names may hold one, the values these options take never do); a column given twice is refused. `form`
    and `example` show the expected shape in the error ("HEADER=TARGET", '--map "IC50 (nM)=ic50"')."""
    pairs: dict[str, str] = {}
    for value in values:
        column, sep, given = value.rpartition("=")
        column, given = column.strip(), given.strip()
        if not sep or not column or not given:
            raise CliError(f"{option} {value!r}: expected {form}, e.g. {example}")
        if column in pairs:
            raise CliError(f'{option}: column "{column}" is given twice')
        pairs[column] = given
    return pairs
