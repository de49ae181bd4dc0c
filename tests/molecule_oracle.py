"""A brute-force, row-at-a-time evaluation of molecule queries: what queries.py must answer, written
independently of it (plain Python over dicts, straight from the documented semantics)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from services.molecule.index.query import Condition, MoleculeQuery

Value = float | str
PRECEDENCE = ("EXPERIMENTAL", "IMPORTED", "PREDICTED", "CALCULATED")  # DOMAIN.md: most trusted first


@dataclass
class Row:
    id: str
    status: str
    created: float
    updated: float
    name: str
    inchi_key: str
    formula: str
    registration_number: str = ""
    smiles: str = ""
    canonical_smiles: str = ""
    values: dict[tuple[str, str], Value] = field(default_factory=dict)  # (name, source) → value
    flags: set[tuple[str, str]] = field(default_factory=set)  # (user, type)
    libraries: set[str] = field(default_factory=set)


def value_of(row: Row, name: str, source: str = "") -> Value | None:
    if source:
        return row.values.get((name, source))
    for s in PRECEDENCE:
        if (name, s) in row.values:
            return row.values[(name, s)]
    return None


def _as_number(x: Value) -> float | None:
    if isinstance(x, float):
        return x
    try:
        number = float(x)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _single(value: Value, op: str, x: Value) -> bool:
    if isinstance(value, str):
        if not isinstance(x, str):
            return False
        return {
            "eq": value == x,
            "neq": value != x,
            "contains": x.casefold() in value.casefold(),
        }.get(op, False)
    if op == "contains":
        return False
    number = _as_number(x)
    if number is None:
        return False
    return {
        "eq": value == number,
        "neq": value != number,
        "gt": value > number,
        "gte": value >= number,
        "lt": value < number,
        "lte": value <= number,
    }[op]


def condition_holds(row: Row, c: Condition) -> bool:
    if c.property in ("name", "inchi_key", "formula", "registration_number", "smiles", "canonical_smiles"):
        value: Value | None = getattr(row, c.property)
    else:
        value = value_of(row, c.property, c.source)
    if value is None:
        return False
    if c.operator == "in":
        assert isinstance(c.value, tuple)
        return any(_single(value, "eq", x) for x in c.value)
    assert not isinstance(c.value, tuple)
    return _single(value, c.operator, c.value)


def matches(row: Row, query: MoleculeQuery, user: str) -> bool:
    if query.statuses:
        if row.status not in query.statuses:
            return False
    elif row.status == "ARCHIVED":
        return False
    if query.flags and not any((user, f) in row.flags for f in query.flags):
        return False
    if query.library_id and query.library_id not in row.libraries:
        return False
    return all(condition_holds(row, c) for c in query.conditions)


def ordered(rows: list[Row], sort_by: str, desc: bool) -> list[Row]:
    """Numbers, then text, then rows without a value; each group by value (asc/desc), ties by id."""
    by_id = sorted(rows, key=lambda r: r.id)

    def key_of(row: Row) -> Value | None:
        if sort_by == "created_at":
            return row.created
        if sort_by == "updated_at":
            return row.updated
        if sort_by in ("name", "inchi_key", "formula", "registration_number"):
            return str(getattr(row, sort_by))
        return value_of(row, sort_by)

    numbers = [r for r in by_id if isinstance(key_of(r), float)]
    texts = [r for r in by_id if isinstance(key_of(r), str)]
    missing = [r for r in by_id if key_of(r) is None]
    numbers.sort(key=key_of, reverse=desc)  # type: ignore[arg-type]  # stable: ties keep id order
    texts.sort(key=key_of, reverse=desc)  # type: ignore[arg-type]
    return numbers + texts + missing


def evaluate(
    rows: list[Row], query: MoleculeQuery, user: str, page: int, page_size: int
) -> tuple[list[str], int]:
    hits = [r for r in rows if matches(r, query, user)]
    sort_by, desc = (query.sort_by, query.sort_desc) if query.sort_by else ("created_at", True)
    start = (page - 1) * page_size
    return [r.id for r in ordered(hits, sort_by, desc)[start : start + page_size]], len(hits)
