"""Proto <-> Python conversions every servicer needs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(value: datetime | None) -> Timestamp | None:
    """None stays unset in the message (the JSON field is then omitted)."""
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def enum_name(enum: Any, number: int) -> str:
    """A request's enum number as the domain's word: Molecule.Status ARCHIVED (5) → "ARCHIVED" (enum
    values are the domain's words; `enum` is a generated enum wrapper such as molecule_pb2.Molecule.Status).

    The zero value (STATUS_UNSPECIFIED) is "" (not given). A number the contract does not define
    becomes "#<number>", a name no domain vocabulary holds, so the domain's own check refuses it with a
    400 that names the field and the values it accepts (one place says what is valid, and a batch
    refuses only the item that carries it)."""
    if number == 0:
        return ""
    try:
        return str(enum.Name(number))
    except ValueError:
        return f"#{number}"


def enum_number(enum: Any, name: str) -> Any:
    """A stored domain word as the response's enum number: "ARCHIVED" → Molecule.Status ARCHIVED (5).

    A name the contract does not know (stored before the contract had it) is the zero value
    (UNSPECIFIED), so a read never fails on old data."""
    try:
        return enum.Value(name)
    except ValueError:
        return 0
