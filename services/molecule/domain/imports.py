"""CSV import rules in plain Python (no I/O): job states, progress figures, a row's evaluation, chunk counts.

`evaluate_rows` is the per-row work of an import (property values parsed and range-checked, the
structure registered by RDKit). It runs in the CSV worker's process pool, so its arguments and
results are small picklable values: only the mapped cells of a row go in, and rejected rows come
back as a row number and a reason (the worker keeps the original cells for the error report).

Decisions:
- An empty property cell means "no value", not an error; an empty SMILES cell rejects the row.
- A row with several problems is rejected once, with every reason (SMILES first, then each value
  prefixed by its column header, joined by "; "), so the scientist fixes the row in one go.
- Names longer than MAX_NAME_LENGTH reject the row rather than being cut: a cut name is a wrong name.
- reject_all keeps the validation pass's results (`encode_valid`: JSON, zlib) rather than computing
  the structures twice: RDKit is ~95% of an import's CPU, and a chunk's results are ~1 MB compressed.
  JSON and not pickle, because the bytes sit in the database and are read back by every worker.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import TypeAlias

from services.molecule.domain import chemistry, csv_mapping
from services.molecule.domain.chemistry import Registered
from services.molecule.domain.properties import ParsedValue, PropertyValueError, parse_value
from services.molecule.domain.vocabulary import IMPORTED
from services.runtime.csv_format import Dialect
from services.runtime.errors import ValidationError

MAX_NAME_LENGTH = 500

# A stored property value: (value_num, value_text, units); exactly one of the first two is set.
PropertyValue: TypeAlias = tuple[float | None, str | None, str]


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.PROCESSING)


class Mode(StrEnum):
    KEEP_VALID = "keep_valid"  # register every valid row, report the others
    REJECT_ALL = "reject_all"  # register nothing if any row fails


class Phase(StrEnum):
    """What a chunk message asks for (ImportChunkRequested.phase; empty means REGISTER)."""

    REGISTER = "register"
    VALIDATE = "validate"  # reject_all, first pass: evaluate and keep the results, register nothing
    COMMIT = "commit"  # reject_all, once every chunk validated cleanly: register all in one transaction


def parse_mode(text: str) -> Mode:
    try:
        return Mode(text or Mode.KEEP_VALID)
    except ValueError:
        raise ValidationError(
            f"unknown mode {text!r}: use keep_valid or reject_all",
            field_violations=[("mode", "keep_valid or reject_all")],
        ) from None


def chunk_phase(mode: Mode) -> Phase:
    """The phase of the messages published when a job starts."""
    return Phase.VALIDATE if mode is Mode.REJECT_ALL else Phase.REGISTER


# --- progress ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Throughput:
    rows_per_second: float
    eta_seconds: float


def throughput(
    processed_rows: int, total_rows: int, started_at: datetime | None, until: datetime, *, ended: bool = False
) -> Throughput:
    """Rows per second since the first chunk started, and the seconds left at that rate.

    `until` is now for a running job; for an `ended` one it is the finish time, and its ETA is 0
    (a cancelled or failed job will not do the rest). Nothing is known before the first rows are
    done: both figures are then 0.
    """
    if started_at is None or processed_rows <= 0:
        return Throughput(0.0, 0.0)
    elapsed = (until - started_at).total_seconds()
    if elapsed <= 0:
        return Throughput(0.0, 0.0)
    rate = processed_rows / elapsed
    return Throughput(rate, 0.0 if ended else max(total_rows - processed_rows, 0) / rate)


@dataclass(frozen=True, slots=True)
class ImportJob:
    """A job as callers see it: its file, how to read it, and its progress."""

    id: str
    organization_id: str
    status: JobStatus
    mode: Mode
    storage_key: str
    filename: str
    headers: tuple[str, ...]
    mapping: Mapping[str, str]
    dialect: Dialect
    library_id: str | None
    predict: tuple[str, ...]
    total_rows: int
    chunk_count: int
    chunks_done: int
    processed_rows: int
    registered: int
    merged: int
    rejected: int
    failure_reason: str
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    throughput: Throughput

    @property
    def progress_key(self) -> tuple[object, ...]:
        """What a watcher must be told about when it changes."""
        return (self.status, self.processed_rows, self.registered, self.merged, self.rejected)


@dataclass(frozen=True, slots=True)
class ChunkCounts:
    """What a chunk (or a job) did with its rows: processed = registered + merged + rejected."""

    processed: int = 0
    registered: int = 0  # rows that created a molecule
    merged: int = 0  # valid rows whose molecule existed already (or was created by an earlier row)
    rejected: int = 0

    @classmethod
    def of(cls, rejected: int, created: Sequence[bool]) -> ChunkCounts:
        """Counts from the rejected rows and, per valid row, whether it created its molecule."""
        registered = sum(created)
        return cls(rejected + len(created), registered, len(created) - registered, rejected)

    def __add__(self, other: ChunkCounts) -> ChunkCounts:
        return ChunkCounts(
            self.processed + other.processed,
            self.registered + other.registered,
            self.merged + other.merged,
            self.rejected + other.rejected,
        )


# --- rows ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StructureRow:
    """A valid structure to register, with what came with it (registration.register_structures' input)."""

    row_number: int | None  # in the file; None for API registrations
    registered: Registered
    name: str = ""
    values: Mapping[str, PropertyValue] = field(default_factory=dict)
    source: str = IMPORTED  # of the values


@dataclass(frozen=True, slots=True)
class RowError:
    row_number: int
    reason: str


def stored_value(parsed: ParsedValue) -> PropertyValue:
    """properties.parse_value's result as a stored (value_num, value_text, units)."""
    if isinstance(parsed.value, str):
        return None, parsed.value, parsed.units
    return float(parsed.value), None, parsed.units


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """Which cells of a row an import reads: `columns` are the positions of the SMILES cell, then the
    name cell (if mapped), then one cell per mapped property, in the order of `properties`."""

    columns: tuple[int, ...]
    has_name: bool
    properties: tuple[tuple[str, str], ...]  # (header, property name)

    @classmethod
    def of(cls, headers: Sequence[str], mapping: Mapping[str, str]) -> ColumnPlan:
        """From a mapping csv_mapping.validate_mapping accepted (so exactly one header maps to smiles)."""
        position = {header: i for i, header in enumerate(headers)}
        by_target = {target: header for header, target in mapping.items()}
        smiles = position[by_target[csv_mapping.SMILES]]
        name_header = by_target.get(csv_mapping.NAME)
        properties = tuple(
            (header, target)
            for header in headers
            if (target := mapping.get(header, csv_mapping.IGNORE))
            not in (csv_mapping.SMILES, csv_mapping.NAME, csv_mapping.IGNORE)
        )
        columns: tuple[int, ...] = (smiles,)
        if name_header is not None:
            columns += (position[name_header],)
        columns += tuple(position[header] for header, _ in properties)
        return cls(columns, name_header is not None, properties)

    def project(self, cells: Sequence[str]) -> tuple[str, ...]:
        return tuple(cells[i] for i in self.columns)


def evaluate_rows(
    plan: ColumnPlan, rows: Sequence[tuple[int, tuple[str, ...]]], *, tautomers: bool = False
) -> list[StructureRow | RowError]:
    """Each (row number, projected cells) as a structure to register or a row error, in order."""
    reasons: list[list[str]] = []
    names: list[str] = []
    values: list[dict[str, PropertyValue]] = []
    first_value = 2 if plan.has_name else 1
    for _, cells in rows:
        problems: list[str] = []
        name = cells[1].strip() if plan.has_name else ""
        if len(name) > MAX_NAME_LENGTH:
            problems.append(f"name too long: {len(name)} characters (limit {MAX_NAME_LENGTH})")
        parsed: dict[str, PropertyValue] = {}
        for (header, prop), cell in zip(plan.properties, cells[first_value:], strict=True):
            if not cell.strip():
                continue
            try:
                parsed[prop] = stored_value(parse_value(prop, cell))
            except PropertyValueError as error:
                problems.append(f"{header}: {error.reason}")
        reasons.append(problems)
        names.append(name)
        values.append(parsed)
    structures = chemistry.register_many((cells[0] for _, cells in rows), tautomers=tautomers)
    results: list[StructureRow | RowError] = []
    for (row_number, _), structure, problems, name, parsed in zip(
        rows, structures, reasons, names, values, strict=True
    ):
        if isinstance(structure, chemistry.InvalidStructure):
            problems.insert(0, structure.reason)
        if problems:
            results.append(RowError(row_number, "; ".join(problems)))
        else:
            assert isinstance(structure, Registered)
            results.append(StructureRow(row_number, structure, name, parsed))
    return results


# --- validated results, kept between reject_all's two passes ------------------------------------------

_BYTES_FIELDS = frozenset(f.name for f in fields(Registered) if f.type in ("bytes", bytes))


def encode_valid(rows: Sequence[StructureRow]) -> bytes:
    def structure(registered: Registered) -> dict[str, object]:
        out: dict[str, object] = {}
        for f in fields(Registered):
            value = getattr(registered, f.name)
            out[f.name] = value.hex() if f.name in _BYTES_FIELDS else value
        return out

    payload = [
        [row.row_number, row.name, dict(row.values), row.source, structure(row.registered)] for row in rows
    ]
    return zlib.compress(json.dumps(payload, separators=(",", ":")).encode(), 1)


def decode_valid(data: bytes) -> list[StructureRow]:
    rows = []
    for row_number, name, values, source, structure in json.loads(zlib.decompress(data)):
        for key in _BYTES_FIELDS:
            structure[key] = bytes.fromhex(structure[key])
        stored = {prop: (num, text, units) for prop, (num, text, units) in values.items()}
        rows.append(StructureRow(row_number, Registered(**structure), name, stored, source))
    return rows
