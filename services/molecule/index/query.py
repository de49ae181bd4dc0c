"""The molecule query language: filters, sorting and their validation (pure; no I/O).

Semantics (documented for the API):
- A condition matches only molecules that have a value for the property (so `neq 5` skips molecules
  without the property, as SQL would). Without `source` the effective value is compared; with it,
  only that source's value.
- Numbers compare numerically, text case-sensitively for eq/neq/in and case-insensitively for
  contains. A custom_* property may hold numbers and text: a number in a condition compares with
  numeric values, text with text values (text that reads as a number also matches that number).
- Status: default every status but ARCHIVED. Flags: the caller's own, any of the given types.
- Sorting: by a property's effective value (numbers before text for mixed custom properties,
  molecules lacking the value last in either direction), or by name, inchi_key, formula, registration_number,
  created_at, updated_at. Ties are broken by id, so pages never overlap. Default: newest first.
- smiles / canonical_smiles conditions are evaluated by PostgreSQL (structures are not held here:
  they would double the memory, and exact/substructure search has its own index).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.molecule.domain import properties
from services.molecule.domain.vocabulary import FLAG_TYPES, SOURCES, STATUSES
from services.molecule.index.ids import parse_uuid
from services.runtime.validation import Violations

MEMORY_FIELDS = ("name", "inchi_key", "formula", "registration_number")  # molecule text columns held in the index
SQL_FIELDS = ("smiles", "canonical_smiles")  # molecule text columns filtered in PostgreSQL
TEXT_FIELDS = MEMORY_FIELDS + SQL_FIELDS
TIME_FIELDS = ("created_at", "updated_at")
DEFAULT_SORT = "created_at"
MAX_CONDITIONS = 20
MAX_IN_VALUES = 1000
MAX_TEXT_VALUE = properties.MAX_TEXT_LENGTH


class Operator(StrEnum):
    EQ = "eq"
    NEQ = "neq"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    CONTAINS = "contains"
    IN = "in"


_ORDERING = (Operator.GT, Operator.GTE, Operator.LT, Operator.LTE)
_TEXT_OPERATORS = (Operator.EQ, Operator.NEQ, Operator.CONTAINS, Operator.IN)
_NUMBER_OPERATORS = (Operator.EQ, Operator.NEQ, *_ORDERING, Operator.IN)


# ----------------------------------------------------------------------------------------------------
# Queries: parsing and validation (pure)


Scalar = float | str


@dataclass(frozen=True, slots=True)
class RawFilter:
    """A condition as the caller sent it (JSON values already turned into Python values)."""

    property: str
    operator: str
    value: Any
    source: str = ""


@dataclass(frozen=True, slots=True)
class Condition:
    property: str
    operator: Operator
    value: Scalar | tuple[Scalar, ...]  # a tuple for IN
    source: str = ""  # "" means the effective value


@dataclass(frozen=True, slots=True)
class MoleculeQuery:
    conditions: tuple[Condition, ...] = ()
    flags: tuple[str, ...] = ()  # the caller's flags, any of them
    statuses: tuple[str, ...] = ()  # empty: every status but ARCHIVED
    library_id: str = ""
    sort_by: str = ""  # empty: created_at, newest first
    sort_desc: bool = False


def parse_query(
    *,
    filters: Sequence[RawFilter] = (),
    flags: Iterable[str] = (),
    statuses: Iterable[str] = (),
    library_id: str = "",
    sort_by: str = "",
    sort_desc: bool = False,
) -> MoleculeQuery:
    """Validate a query; every problem is reported at once (400 with one field violation each)."""
    violations = Violations()
    if len(filters) > MAX_CONDITIONS:
        violations.add("filters", f"at most {MAX_CONDITIONS} conditions")
    conditions = []
    for i, raw in enumerate(filters[:MAX_CONDITIONS]):
        try:
            conditions.append(parse_condition(raw))
        except _Invalid as problem:
            violations.add(f"filters[{i}].{problem.field}", problem.reason)
    flag_set = _names(flags, FLAG_TYPES, "flags", violations)
    status_set = _names(statuses, STATUSES, "status", violations)
    if library_id and parse_uuid(library_id) is None:
        violations.add("library_id", "not a library id")
    sort_key = sort_by.strip()
    if sort_key and not _sortable(sort_key):
        violations.add(
            "sort_by", "name, inchi_key, formula, registration_number, created_at, updated_at or a property name"
        )
    if violations:
        field_name, reason = violations.items[0]
        violations.raise_if_any(f"Invalid query: {field_name}: {reason}")
    return MoleculeQuery(
        conditions=tuple(conditions),
        flags=flag_set,
        statuses=status_set,
        library_id=str(parse_uuid(library_id)) if library_id else "",
        sort_by=sort_key,
        sort_desc=sort_desc,
    )


class _Invalid(Exception):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field_name
        self.reason = reason


def parse_condition(raw: RawFilter) -> Condition:
    name = raw.property.strip()
    if not name:
        raise _Invalid("property", "a property name is required")
    kind = _kind(name)
    if kind is None:
        raise _Invalid(
            "property",
            f"unknown property {name[:64]!r}: use name, registration_number, smiles, canonical_smiles, inchi_key, "
            "formula, "
            "a known property (GET /api/v1/molecules/properties) or custom_<name>",
        )
    try:
        operator = Operator(raw.operator.strip().lower())
    except ValueError:
        raise _Invalid("operator", "one of eq, neq, gt, gte, lt, lte, contains, in") from None
    source = raw.source.strip().upper()
    if source and source not in SOURCES:
        raise _Invalid("source", f"one of {', '.join(SOURCES)}")
    if source and kind == "text":
        raise _Invalid("source", f"{name} is a molecule field, not a property: it has no source")
    allowed = {"text": _TEXT_OPERATORS, "number": _NUMBER_OPERATORS}.get(kind, tuple(Operator))
    if operator not in allowed:
        what = "text" if kind == "text" else "numbers"
        raise _Invalid("operator", f"{operator} does not apply to {name} ({what}): use {', '.join(allowed)}")
    if raw.value is None:
        raise _Invalid("value", "a value is required")
    if operator is Operator.IN:
        if not isinstance(raw.value, list | tuple) or not raw.value:
            raise _Invalid("value", "in needs a non-empty list of values")
        if len(raw.value) > MAX_IN_VALUES:
            raise _Invalid("value", f"in takes at most {MAX_IN_VALUES} values")
        values = tuple(_scalar(kind, operator, v, name) for v in raw.value)
        return Condition(name, operator, values, source)
    return Condition(name, operator, _scalar(kind, operator, raw.value, name), source)


def _kind(name: str) -> str | None:
    """ "text" (molecule fields, string properties), "number" (numeric properties) or "custom"."""
    if name in TEXT_FIELDS:
        return "text"
    definition = properties.definition(name)
    if definition is None:
        return None
    if definition.value_type is None:
        return "custom"
    return "text" if definition.value_type is properties.ValueType.STRING else "number"


def _scalar(kind: str, operator: Operator, value: Any, name: str) -> Scalar:
    if isinstance(value, list | tuple | dict):
        raise _Invalid("value", "expected a single value" if operator is not Operator.IN else "nested lists")
    if kind == "text" or operator is Operator.CONTAINS:
        if not isinstance(value, str):
            raise _Invalid("value", f"{operator} on {name} compares text: give a string")
        if len(value) > MAX_TEXT_VALUE:
            raise _Invalid("value", f"at most {MAX_TEXT_VALUE} characters")
        return value
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _Invalid("value", "not a finite number")
        return float(value)
    if isinstance(value, str):
        number = parse_number(value)
        if number is not None:
            return number if kind == "number" or operator in _ORDERING else value
        if kind == "custom" and operator not in _ORDERING:
            if len(value) > MAX_TEXT_VALUE:
                raise _Invalid("value", f"at most {MAX_TEXT_VALUE} characters")
            return value
        raise _Invalid("value", f"{operator} on {name} compares numbers: {value[:40]!r} is not a number")
    raise _Invalid("value", f"unsupported value type {type(value).__name__}")


def parse_number(text: str) -> float | None:
    try:
        number = float(text.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _names(
    given: Iterable[str], allowed: Sequence[str], field_name: str, violations: Violations
) -> tuple[str, ...]:
    out: list[str] = []
    for value in given:
        name = value.strip().upper()
        if name not in allowed:
            violations.add(field_name, f"unknown {field_name} {value[:40]!r}: one of {', '.join(allowed)}")
        elif name not in out:
            out.append(name)
    return tuple(out)


def _sortable(key: str) -> bool:
    return key in MEMORY_FIELDS or key in TIME_FIELDS or properties.definition(key) is not None

