"""Molecule ids in the columnar index: 16-byte UUIDs as two uint64 (big-endian halves, so numeric
order is id order), text as S36."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import numpy as np

GONE = -1  # status code of a row whose molecule no longer exists (or left the organization)


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


_HEX = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), np.uint8).reshape(256, 2)
_HEX_POSITIONS = np.array([*range(8), *range(9, 13), *range(14, 18), *range(19, 23), *range(24, 36)])


def id_text(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """uint64 halves → canonical lower-case UUID text (S36), vectorised."""
    n = len(hi)
    raw = np.empty((n, 2), ">u8")
    raw[:, 0] = hi
    raw[:, 1] = lo
    digits = _HEX[raw.view(np.uint8).reshape(n, 16)].reshape(n, 32)
    out = np.full((n, 36), ord("-"), np.uint8)
    out[:, _HEX_POSITIONS] = digits
    return out.view("S36").reshape(n)


def id_halves(ids: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Text ids → (hi, lo); ids that are not UUIDs are left out (they match nothing)."""
    values = [u.int for u in map(parse_uuid, ids) if u is not None]
    hi = np.fromiter((v >> 64 for v in values), np.uint64, len(values))
    lo = np.fromiter((v & 0xFFFFFFFFFFFFFFFF for v in values), np.uint64, len(values))
    return hi, lo

