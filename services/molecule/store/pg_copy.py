"""A decoder for PostgreSQL's binary COPY output (`COPY … TO STDOUT (FORMAT BINARY)`) of array
aggregates, parsed with numpy: how the columnar index reads a whole organization in seconds."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_UUID_ELEMENT = np.dtype([("len", ">i4"), ("hi", ">u8"), ("lo", ">u8")])


def copy_rows(data: bytes) -> Iterator[list[memoryview | None]]:
    """The rows of a COPY … (FORMAT BINARY) output, each a list of fields (None for NULL)."""
    if not data.startswith(_COPY_SIGNATURE):
        raise ValueError("not a binary COPY stream")
    view = memoryview(data)
    pos = 15 + 4 + int.from_bytes(view[15:19], "big")
    while True:
        count = int.from_bytes(view[pos : pos + 2], "big", signed=True)
        pos += 2
        if count < 0:
            return
        fields: list[memoryview | None] = []
        for _ in range(count):
            length = int.from_bytes(view[pos : pos + 4], "big", signed=True)
            pos += 4
            if length < 0:
                fields.append(None)
            else:
                fields.append(view[pos : pos + length])
                pos += length
        yield fields


def _array_body(data: memoryview | None) -> tuple[int, memoryview]:
    """(element count, element bytes) of a one-dimensional binary array without NULL elements."""
    if data is None:
        return 0, memoryview(b"")
    ndim, _has_null = struct.unpack_from(">ii", data, 0)
    if ndim == 0:
        return 0, data[12:12]
    return int.from_bytes(data[12:16], "big"), data[20:]


def fixed_array(data: memoryview | None, dtype: str) -> np.ndarray:
    count, body = _array_body(data)
    records = np.frombuffer(body, np.dtype([("len", ">i4"), ("value", dtype)]), count=count)
    return records["value"].astype(dtype.lstrip(">"))


def uuid_array(data: memoryview | None) -> tuple[np.ndarray, np.ndarray]:
    count, body = _array_body(data)
    records = np.frombuffer(body, _UUID_ELEMENT, count=count)
    return records["hi"].astype(np.uint64), records["lo"].astype(np.uint64)


def text_array(data: memoryview | None) -> list[str]:
    """Equal texts become one object: custom values repeat a lot (series, projects), and comparing a
    column of shared objects stays in cache (measured 15 vs 56 ms for an eq over 500,000 values)."""
    count, body = _array_body(data)
    raw = body.tobytes()
    out: list[str] = []
    seen: dict[bytes, str] = {}
    pos = 0
    for _ in range(count):
        end = pos + 4 + int.from_bytes(raw[pos : pos + 4], "big")
        piece = raw[pos + 4 : end]
        text = seen.get(piece)
        if text is None:
            text = seen[piece] = piece.decode()
        out.append(text)
        pos = end
    return out


def text_field(data: memoryview | None) -> str:
    return "" if data is None else data.tobytes().decode()


