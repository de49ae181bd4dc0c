"""Printing helpers shared by the commands: aligned tables, CSV, JSON, timestamps, enum words."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from cli.client import CliError


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    )


def listing(
    args: argparse.Namespace,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    summary: str | None = None,
    *,
    csv_rows: Sequence[Sequence[str]] | None = None,
) -> None:
    """A list as an aligned table (then the summary), or with `--output csv` as CSV: a header row, then
    `csv_rows` (untruncated values) or `rows`, no summary, so it loads as-is into a spreadsheet."""
    if getattr(args, "output", "table") == "csv":
        writer = csv.writer(sys.stdout, lineterminator=os.linesep)
        writer.writerow(headers)
        writer.writerows(csv_rows if csv_rows is not None else rows)
        return
    print(table(headers, rows))
    if summary:
        print(summary)


def enum_word(message: Message, field: str) -> str:
    """The name of an enum field's value without the prefix all the enum's values share
    (ORGANIZATION_KIND_PHARMA → PHARMA; a nested Kind.PHARMA stays PHARMA): read from the descriptor, so
    renamed enums need no change here."""
    enum_type = message.DESCRIPTOR.fields_by_name[field].enum_type
    assert enum_type is not None, f"{field} is not an enum field"
    names = [value.name for value in enum_type.values]
    shared = os.path.commonprefix(names)
    prefix = shared[: shared.rfind("_") + 1] if len(names) > 1 else ""
    return enum_type.values_by_number[getattr(message, field)].name.removeprefix(prefix)


def as_json(message: Message) -> str:
    """The message as the REST API would return it (snake_case fields)."""
    return json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2)


def timestamp(value: Timestamp) -> str:
    if not value.seconds and not value.nanos:
        return "-"
    return value.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")


def fields(pairs: Sequence[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in pairs) + 1
    return "\n".join(f"{label + ':':<{width}} {value}" for label, value in pairs)


def page_summary(meta: Any, noun: str) -> str:
    """`page 1 of 3, 120 users` from a molbridge.common.v1.PageMeta."""
    pages = max(1, -(-meta.total // max(meta.page_size, 1)))
    return f"page {meta.page} of {pages}, {meta.total} {noun}{'' if meta.total == 1 else 's'}"


def write_file(path: Path, data: bytes) -> None:
    """Save a download; an unwritable path is the user's error, not a traceback."""
    try:
        path.write_bytes(data)
    except OSError as err:
        raise CliError(f"cannot write {path}: {err.strerror or err}") from err
