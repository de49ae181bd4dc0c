"""Cells of CSV files the services hand out, made safe to open in a spreadsheet (OWASP CSV injection)."""

from __future__ import annotations

import re

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


def neutralise_cell(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (a leading quote), plain numbers left as they are."""
    if value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value
