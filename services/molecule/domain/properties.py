"""The molecule property catalogue (DOMAIN.md "Known properties") and value parsing.

Pure Python, no I/O: the CSV import, the REST/gRPC handlers and the prediction service all read
the same definitions. The catalogue itself (names, units, ranges, types) lives in
services/runtime/properties.py, shared with the CRO service's results validation; this module adds
custom_* properties and the parsing of values.

Decisions:
- Numbers use "." as the decimal separator only. "1,5" is rejected, not guessed: in a CSV it is
  a decimal comma in one locale and a thousands separator in another, and a silent 1000× error
  in an IC50 is worse than a row error the scientist can fix.
- Ranges are inclusive at both ends; NaN and ±inf are rejected everywhere, custom values included.
- An empty (or all-blank) value is an error here; whether an empty CSV cell means "no value" is
  the caller's decision.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# The catalogue lives in services/runtime/properties.py; molecule code keeps importing it from here.
from services.runtime.properties import CALCULATED_PROPERTIES as CALCULATED_PROPERTIES
from services.runtime.properties import KNOWN_PROPERTIES as KNOWN_PROPERTIES
from services.runtime.properties import PREDICTABLE_PROPERTIES as PREDICTABLE_PROPERTIES
from services.runtime.properties import PropertyDefinition as PropertyDefinition
from services.runtime.properties import ValueType as ValueType


@dataclass(frozen=True)
class ParsedValue:
    name: str
    value: float | int | str | bool
    value_type: ValueType
    units: str


class PropertyValueError(ValueError):
    """A value that cannot be stored for a property; `reason` is shown to the user as is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


CUSTOM_PREFIX = "custom_"
MAX_NAME_LENGTH = 64
MAX_TEXT_LENGTH = 1000  # bounds a text value (a CSV cell may be megabytes of junk)
_CUSTOM_NAME = re.compile(rf"^{CUSTOM_PREFIX}[a-z0-9_]{{1,{MAX_NAME_LENGTH - len(CUSTOM_PREFIX)}}}$")
# Plain decimal or scientific notation, "." as the separator; no "_" digit grouping, hex or words.
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")  # linear: no nested repeats
_NON_FINITE = re.compile(r"^[+-]?(?:nan|inf|infinity)$", re.IGNORECASE)
_MAX_INT64 = 2**63 - 1
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def is_custom_name(name: str) -> bool:
    """`custom_` followed by 1–57 of [a-z0-9_]: safe as a JSON key, a column label and a filter name."""
    return bool(_CUSTOM_NAME.match(name))


def definition(name: str) -> PropertyDefinition | None:
    """The definition of a known property or a valid custom_* name; None for anything else."""
    known = KNOWN_PROPERTIES.get(name)
    if known is not None:
        return known
    if is_custom_name(name):
        return PropertyDefinition(name, name[len(CUSTOM_PREFIX) :], None, custom=True)
    return None


def parse_value(name: str, raw: str) -> ParsedValue:
    """Parse the text of one value (a CSV cell, a form field) for property `name`.

    Raises PropertyValueError with a reason fit for a row-error report.
    """
    prop = _require(name)
    text = raw.strip()
    if not text:
        raise PropertyValueError(f"empty value for {name}")
    if len(text) > MAX_TEXT_LENGTH:
        raise PropertyValueError(f"value too long: {len(text)} characters (limit {MAX_TEXT_LENGTH})")
    if prop.value_type is None:  # custom: numbers stay numbers, everything else is text
        if _NUMBER.match(text):
            if any(c in text for c in ".eE"):
                return _checked(prop, _finite(text), ValueType.NUMERIC)
            integer = int(text)
            # "007" or a 30-digit code is an identifier: as a number it would lose digits.
            if abs(integer) <= _MAX_INT64 and not re.match(r"^[+-]?0\d", text):
                return _checked(prop, integer, ValueType.INTEGER)
        if _NON_FINITE.match(text):
            raise PropertyValueError(f"not a finite number: {_quote(text)}")
        return _checked(prop, text, ValueType.STRING)
    if prop.value_type is ValueType.STRING:
        return _checked(prop, text, ValueType.STRING)
    if prop.value_type is ValueType.BOOLEAN:
        lowered = text.lower()
        if lowered in _TRUE or lowered in _FALSE:
            return _checked(prop, lowered in _TRUE, ValueType.BOOLEAN)
        raise PropertyValueError(f"not a boolean: {_quote(text)} (use true/false, yes/no or 1/0)")
    return check_value(name, _parse_number(text))


def check_value(name: str, value: float | int | str | bool) -> ParsedValue:
    """Validate an already-typed value (a JSON number from the API, a calculated or predicted value).

    Strings go through parse_value; numbers are checked against the property's type and range.
    """
    if isinstance(value, str):
        return parse_value(name, value)
    prop = _require(name)
    if isinstance(value, bool):
        if prop.value_type is ValueType.BOOLEAN:
            return _checked(prop, value, ValueType.BOOLEAN)
        raise PropertyValueError(
            f"expected a {prop.value_type or 'number or text'} for {name}, got a boolean"
        )
    if not math.isfinite(value):
        raise PropertyValueError(f"not a finite number: {value!r}")
    if prop.value_type is None:
        return _checked(prop, value, ValueType.INTEGER if isinstance(value, int) else ValueType.NUMERIC)
    if prop.value_type is ValueType.INTEGER:
        if isinstance(value, float) and not value.is_integer():
            raise PropertyValueError(f"not an integer: {_format(value)}")
        return _checked(prop, int(value), ValueType.INTEGER)
    if prop.value_type is ValueType.NUMERIC:
        return _checked(prop, float(value), ValueType.NUMERIC)
    raise PropertyValueError(f"expected a {prop.value_type} for {name}, got a number")


def _require(name: str) -> PropertyDefinition:
    prop = definition(name)
    if prop is None:
        raise PropertyValueError(
            f"unknown property: {_quote(name)} (use a known property or custom_<name> with a-z, 0-9, _)"
        )
    return prop


def _parse_number(text: str) -> float:
    if _NUMBER.match(text):
        return _finite(text)
    if _NON_FINITE.match(text):
        raise PropertyValueError(f"not a finite number: {_quote(text)}")
    if "," in text and _NUMBER.match(text.replace(",", ".", 1)):
        raise PropertyValueError(
            f"not a number: {_quote(text)} (use '.' as the decimal separator; ',' is ambiguous"
            " between a decimal comma and a thousands separator)"
        )
    raise PropertyValueError(f"not a number: {_quote(text)}")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # e.g. 1e999 overflows to inf
        raise PropertyValueError(f"not a finite number: {_quote(text)}")
    return number


def _checked(prop: PropertyDefinition, value: float | int | str | bool, value_type: ValueType) -> ParsedValue:
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = prop.minimum, prop.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            units = f" {prop.units}" if prop.units else ""
            allowed = f"{_format(low)}–{_format(high)}"
            raise PropertyValueError(
                f"out of range for {prop.name}: {_format(value)}{units} (allowed {allowed})"
            )
    return ParsedValue(prop.name, value, value_type, prop.units)


def _format(number: float | int | None) -> str:
    """Short exact form for messages: 2000000 → 2e6, 1234567 → 1.234567e6, 0.5 → 0.5, 1e-05 → 1e-5."""
    if number is None:
        return "unbounded"
    text = f"{number:.15g}"
    if "e" not in text and abs(number) >= 1e5:
        text = f"{number:.14e}"
    mantissa, _, exponent = text.partition("e")
    if not exponent:
        return text
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _quote(text: str, limit: int = 40) -> str:
    shown = text if len(text) <= limit else text[:limit] + "…"
    return repr(shown)
