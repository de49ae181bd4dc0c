"""A CRO's results CSV, validated against its submission (issue 12, "Upload and validation"). Pure: no I/O.

The upload worker decodes the file (dialect, encoding, rows) and hands the header and the numbered rows
here with the submission's facts (its samples and the properties its specifications ask for). Out come
validated measurements in canonical units, row errors, replicate aggregates, a content hash and a QC
summary. Big files can go chunk by chunk: `read_rows` per chunk, `build_result_set` once at the end.

Formats (decided by the column mapping; `suggest_mapping` proposes one from the header names):
- LONG: one value per row. Columns: an identifier (sample code, registration number, InChIKey or
  molecule id; several may be mapped and must then agree), property, value, units, and optionally a
  qualifier, a replicate label and notes.
- WIDE: one column per property, its units in the header in brackets, `IC50 (uM)` / `IC50 [uM]`, or
  after the last "_" or space, `IC50_uM`; `column_units` in `plan_columns` overrides them. There is no
  units row (it cannot be told from a data row reliably). A qualifier is written in the cell (`<10`);
  the notes and replicate columns apply to every value of the row; an empty cell is "no value".

Decisions:
- Units are case-sensitive as SI writes them: `uM` is micromolar, `um` is micrometre (a row error, with
  a hint). Converted with pint to DOMAIN.md's canonical units; a scale factor may precede the units
  (`10^-6 cm/s`, `1e-6 cm/s`). Converted values are rounded to 12 significant digits, so 0.5 uM is
  500 nM exactly and not 499.99999999999994 (no assay is that precise).
- A property with canonical units needs units in the file (an IC50 without them could be off 1000×);
  a dimensionless one (pKa, logD) takes none ("", "-" or "–").
- Numbers use "." as the decimal separator only (as in the molecule CSV import): "1,5" is a row error.
- Qualifiers: `=` (or none), `~` (approximate: a measured number, averaged like one), `<` and `>`
  (censored: the value is a bound). They go in the qualifier column or before the number in the value
  cell; both at once must agree. Anything else (`<=`, `≤`) is a row error. Ranges apply to bounds too.
- Errors are per value: in the wide format a bad cell rejects that value, the row's other values stay;
  an unusable identifier rejects the whole row. Whether any error fails the file is the caller's mode.
- Replicates: the values of one (molecule, property). Two rows with the same non-empty replicate label
  for one (molecule, property) are all rejected (DUPLICATE_REPLICATE), whichever comes first; rows
  without a label are always separate replicates.
- Aggregate of the replicates (`Aggregate`): `mean`, `sd` (sample SD, n ≥ 2) and `n` always describe
  the uncensored values only, `n_censored` counts the bounds. The summary `qualifier` + `value`:
  none censored → `=` (`~` if any replicate was approximate) and the mean; censored in one direction →
  that direction and the tightest bound no replicate contradicts (for `<` the largest of all bounds
  and values, for `>` the smallest), so `8000, >10000, >10000` is `>8000` and `<1, 0.8` is `<1`;
  `<` and `>` both present → conflicting: qualifier and value None, counted in the QC summary.
- The result set hash is the SHA-256 of the canonical JSON of the accepted measurements (molecule,
  property, qualifier, canonical value and units, replicate label, notes with whitespace collapsed),
  sorted: row order, whitespace, identifier kind and the units written do not change it. Rejected rows
  are not part of it: the same accepted content is the same result set.
- Only known numeric properties (services/runtime/properties.py) can be results; custom_* cannot yet.
"""

from __future__ import annotations

import builtins
import hashlib
import math
import re
import statistics
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache, cached_property, lru_cache
from tokenize import TokenError
from typing import Any

import pint

from services.cro.domain.packages import canonical_json
from services.cro.domain.vocabulary import CENSORED, Qualifier
from services.runtime.errors import ValidationError
from services.runtime.properties import KNOWN_PROPERTIES, ValueType

HASH_VERSION = 1
MAX_NOTES_LENGTH = 1000
MAX_LABEL_LENGTH = 64
SIGNIFICANT_DIGITS = 12


class ResultFormat(StrEnum):
    LONG = "LONG"
    WIDE = "WIDE"


class RowErrorCode(StrEnum):
    ROW_SHAPE = "ROW_SHAPE"
    MISSING_IDENTIFIER = "MISSING_IDENTIFIER"
    UNKNOWN_SAMPLE = "UNKNOWN_SAMPLE"
    AMBIGUOUS_SAMPLE = "AMBIGUOUS_SAMPLE"
    IDENTIFIER_MISMATCH = "IDENTIFIER_MISMATCH"
    MISSING_PROPERTY = "MISSING_PROPERTY"
    UNKNOWN_PROPERTY = "UNKNOWN_PROPERTY"
    PROPERTY_NOT_REQUESTED = "PROPERTY_NOT_REQUESTED"
    MISSING_VALUE = "MISSING_VALUE"
    NOT_A_NUMBER = "NOT_A_NUMBER"
    BAD_QUALIFIER = "BAD_QUALIFIER"
    MISSING_UNITS = "MISSING_UNITS"
    UNKNOWN_UNITS = "UNKNOWN_UNITS"
    INCOMPATIBLE_UNITS = "INCOMPATIBLE_UNITS"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    NOT_AN_INTEGER = "NOT_AN_INTEGER"
    DUPLICATE_REPLICATE = "DUPLICATE_REPLICATE"
    TOO_LONG = "TOO_LONG"


# Column mapping targets besides the known property names (the wide format's value columns).
SAMPLE_CODE, REGISTRATION_NUMBER, INCHI_KEY, MOLECULE_ID = (
    "sample_code",
    "registration_number",
    "inchi_key",
    "molecule_id",
)
PROPERTY, VALUE, UNITS, QUALIFIER, REPLICATE, NOTES, IGNORE = (
    "property", "value", "units", "qualifier", "replicate", "notes", "ignore",
)  # fmt: skip
IDENTIFIERS = (SAMPLE_CODE, REGISTRATION_NUMBER, INCHI_KEY, MOLECULE_ID)
_LONG_ONLY = (PROPERTY, VALUE, UNITS, QUALIFIER)
FIELDS = (*IDENTIFIERS, *_LONG_ONLY, REPLICATE, NOTES, IGNORE)
RESULT_PROPERTIES = frozenset(
    name for name, d in KNOWN_PROPERTIES.items() if d.value_type in (ValueType.NUMERIC, ValueType.INTEGER)
)


class MappingError(ValidationError):
    """A column mapping that cannot be read; `field_violations` name each problem."""


# --- the submission's facts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    molecule_id: str
    sample_code: str
    registration_number: str = ""
    inchi_key: str = ""


@dataclass(frozen=True)
class SubmissionFacts:
    samples: tuple[Sample, ...]
    # What the specifications ask for (`requested_properties`); empty: they name none, so every result
    # property is accepted and none is reported missing.
    properties: frozenset[str]

    @cached_property
    def _index(self) -> dict[str, dict[str, Sample | None]]:
        """identifier kind → normalised identifier → sample (None: two samples share it)."""
        index: dict[str, dict[str, Sample | None]] = {kind: {} for kind in IDENTIFIERS}
        for sample in self.samples:
            for kind in IDENTIFIERS:
                key = _identifier_key(kind, getattr(sample, kind))
                if key:
                    index[kind][key] = None if key in index[kind] else sample
        return index

    def lookup(self, kind: str, text: str) -> Sample:
        """The sample an identifier names; raises _Problem when it names none or several."""
        key = _identifier_key(kind, text)
        table = self._index[kind]
        if key not in table:
            raise _Problem(RowErrorCode.UNKNOWN_SAMPLE, f"no sample with {kind} {_quote(text)} in this submission")
        found = table[key]
        if found is None:
            raise _Problem(RowErrorCode.AMBIGUOUS_SAMPLE, f"{kind} {_quote(text)} names several samples")
        return found


def _identifier_key(kind: str, text: str) -> str:
    text = text.strip()
    return text.lower() if kind == MOLECULE_ID else text.upper()


# --- output ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    row_number: int
    column: str  # the header of the cell at fault ("" for the row as a whole)
    code: RowErrorCode
    reason: str
    property: str = ""  # when known, for the per-property QC counts


@dataclass(frozen=True)
class Measurement:
    molecule_id: str
    sample_code: str
    property: str
    qualifier: Qualifier
    value: float  # in `units`, the property's canonical units
    units: str
    replicate: str = ""
    notes: str = ""
    row_number: int = 0
    original: str = ""  # as written ("0.5 uM"), for the review screen

    def canonical(self) -> list[Any]:
        return [
            self.molecule_id,
            self.property,
            str(self.qualifier),
            self.value,
            self.units,
            self.replicate,
            self.notes,
        ]


@dataclass(frozen=True)
class Aggregate:
    molecule_id: str
    sample_code: str
    property: str
    units: str
    qualifier: Qualifier | None  # None: replicates censored in both directions (conflicting)
    value: float | None
    mean: float | None  # of the uncensored replicates
    sd: float | None  # sample SD of the uncensored replicates (n ≥ 2)
    n: int  # uncensored replicates
    n_censored: int

    @builtins.property  # the field `property` hides the builtin in this class body
    def conflicting(self) -> bool:
        return self.qualifier is None


@dataclass(frozen=True)
class PropertyQc:
    accepted: int = 0
    rejected: int = 0
    samples: int = 0  # samples with at least one accepted value


@dataclass(frozen=True)
class QcSummary:
    rows: int
    rows_rejected: int  # rows with at least one error
    values_accepted: int
    errors: int  # row errors: one per rejected value, one for a row rejected as a whole (unknown sample…)
    per_property: Mapping[str, PropertyQc]
    missing: tuple[tuple[str, str], ...]  # (sample code, property) asked for and without any accepted value
    conflicting: int  # aggregates with both < and > replicates

    @property
    def clean(self) -> bool:
        """Nothing rejected, nothing missing, nothing contradictory: what a QC flag can rest on."""
        return not self.rows_rejected and not self.missing and not self.conflicting


@dataclass(frozen=True)
class RowsRead:
    """What `read_rows` made of some rows (a chunk, or the whole file)."""

    rows: int = 0
    measurements: tuple[Measurement, ...] = ()
    errors: tuple[RowError, ...] = ()


@dataclass(frozen=True)
class ResultSet:
    measurements: tuple[Measurement, ...]  # accepted, in canonical order
    aggregates: tuple[Aggregate, ...]  # per (molecule, property), in canonical order
    errors: tuple[RowError, ...]  # by row, then column
    qc: QcSummary
    sha256: str  # of the accepted content (see the module docstring)


# --- what a submission asks for ----------------------------------------------------------------------------

SPECIFICATION_PROPERTIES = "properties"  # the specifications' key naming the requested properties


def requested_property_violations(specifications: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems of `specifications["properties"]` (absent is fine): a list of known result property names."""
    if SPECIFICATION_PROPERTIES not in specifications:
        return []
    field_name = f"specifications.{SPECIFICATION_PROPERTIES}"
    names = specifications[SPECIFICATION_PROPERTIES]
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return [(field_name, "a list of property names, e.g. [\"ic50\", \"solubility\"]")]
    unknown = sorted({name for name in names if name not in RESULT_PROPERTIES})
    if unknown:
        known = ", ".join(sorted(RESULT_PROPERTIES))
        return [(field_name, f"unknown result properties: {', '.join(unknown)} (known: {known})")]
    return []


def requested_properties(specifications: Mapping[str, Any]) -> frozenset[str]:
    """The result properties the specifications ask for; empty when they name none (every one accepted).
    Entries that are not known names are left out (they were refused when the submission was written)."""
    names = specifications.get(SPECIFICATION_PROPERTIES)
    if not isinstance(names, list):
        return frozenset()
    return frozenset(name for name in names if isinstance(name, str) and name in RESULT_PROPERTIES)


# --- column mapping --------------------------------------------------------------------------------------

# Normalised header → field, best first (a header that is one field's name wins over a synonym).
# fmt: off
_FIELD_SYNONYMS: Mapping[str, tuple[str, ...]] = {
    SAMPLE_CODE: ("sample_code", "sample", "sample_id", "sample_name", "sample_no", "code"),
    REGISTRATION_NUMBER: ("registration_number", "reg_number", "reg_no", "registration_no", "registration",
                          "corporate_id"),
    INCHI_KEY: ("inchi_key", "inchikey", "standard_inchi_key"),
    MOLECULE_ID: ("molecule_id", "mol_id", "molecule_uuid", "molecule"),
    PROPERTY: ("property", "property_name", "parameter", "endpoint", "assay", "readout"),
    VALUE: ("value", "result", "measured_value", "result_value", "measurement"),
    UNITS: ("units", "unit", "uom", "unit_of_measure"),
    QUALIFIER: ("qualifier", "operator", "relation", "modifier", "prefix", "standard_relation"),
    REPLICATE: ("replicate", "rep", "replicate_number", "replicate_no", "replicate_id", "repeat", "run"),
    NOTES: ("notes", "note", "comment", "comments", "remarks", "remark"),
}
# Lab shorthand for properties, beyond their names and labels.
_PROPERTY_SYNONYMS: Mapping[str, str] = {
    "ic_50": "ic50", "ec_50": "ec50", "ki": "binding_affinity", "kd": "binding_affinity",
    "affinity": "binding_affinity", "papp": "permeability", "t1_2": "half_life", "t_1_2": "half_life",
    "t_half": "half_life", "thalf": "half_life", "halflife": "half_life", "cl": "clearance",
    "vd": "volume_of_distribution", "vss": "volume_of_distribution", "vdss": "volume_of_distribution",
    "sol": "solubility", "mp": "melting_point", "bp": "boiling_point",
}
# fmt: on
_FIELD_RANKS = {key: (target, rank) for target, keys in _FIELD_SYNONYMS.items() for rank, key in enumerate(keys)}
_BRACKETED = re.compile(r"[\(\[]([^\)\]]*)[\)\]]")


def _normalise(text: str) -> str:
    """Lowercase ASCII words joined by "_", bracketed parts dropped: "Half-life (h)" → "half_life"."""
    ascii_text = unicodedata.normalize("NFKD", _BRACKETED.sub(" ", text)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")


@cache
def _property_names() -> Mapping[str, str]:
    names = {_normalise(d.label): name for name, d in KNOWN_PROPERTIES.items() if name in RESULT_PROPERTIES}
    names.update({name: name for name in RESULT_PROPERTIES})
    names.update(_PROPERTY_SYNONYMS)
    return names


def property_name(text: str) -> str | None:
    """The known property a header or a property cell names ("IC50", "Half-life", "Ki"), if any."""
    return _property_names().get(_normalise(text))


def header_property(header: str) -> tuple[str, str | None] | None:
    """(property, units as written or None) for a wide-format header: "IC50 (uM)", "IC50_uM", "logD"."""
    found = property_name(header)
    if found is not None:
        bracketed = [u.strip() for u in _BRACKETED.findall(header) if u.strip()]
        return found, (bracketed[-1] if bracketed else None)
    head, sep, tail = header.strip().rpartition("_") if "_" in header else header.strip().rpartition(" ")
    if sep and tail and (found := property_name(head)) is not None:
        return found, tail
    return None


def suggest_mapping(headers: Sequence[str]) -> dict[str, str]:
    """A target for every header (a field, a known property, or ignore); no two headers get one target.

    When a property and a value column are found (the long format), property-named columns are ignored.
    """
    mapping: dict[str, str] = {}
    ranked: dict[str, tuple[int, int, str]] = {}  # target → (rank, position, header) of the best candidate
    for position, header in enumerate(headers):
        key = _normalise(header)
        target, rank = _FIELD_RANKS.get(key, ("", 0))
        if not target:
            found = header_property(header)
            target = found[0] if found else ""
        if target and (target not in ranked or (rank, position) < ranked[target][:2]):
            ranked[target] = (rank, position, header)
    long = PROPERTY in ranked and VALUE in ranked
    chosen = {header: target for target, (_, _, header) in ranked.items() if not (long and target in RESULT_PROPERTIES)}
    for header in headers:
        mapping[header] = chosen.get(header, IGNORE)
    return mapping


@dataclass(frozen=True)
class PropertyColumn:
    index: int
    header: str
    property: str
    units: str  # as written in the header (or given in column_units); "" for dimensionless


@dataclass(frozen=True)
class ColumnPlan:
    """A checked mapping: which cell of a row holds what."""

    format: ResultFormat
    headers: tuple[str, ...]
    identifiers: tuple[tuple[int, str], ...]  # (cell index, identifier kind)
    fields: Mapping[str, int] = field(default_factory=dict)  # PROPERTY/VALUE/UNITS/QUALIFIER/REPLICATE/NOTES
    property_columns: tuple[PropertyColumn, ...] = ()  # WIDE only


def plan_columns(
    headers: Sequence[str], mapping: Mapping[str, str], *, column_units: Mapping[str, str] | None = None
) -> ColumnPlan:
    """Check a mapping (header → target; headers left out are ignored); raises MappingError naming each problem.

    `column_units` (header → units) gives or overrides a wide-format column's units.
    """
    violations: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for position, header in enumerate(headers, 1):
        key = header.strip().casefold()
        if key in seen:
            violations.append(("headers", f'duplicate column name "{header}" (columns {seen[key]} and {position})'))
        seen.setdefault(key, position)
    positions = {header: i for i, header in enumerate(headers)}
    by_target: dict[str, list[str]] = defaultdict(list)
    for header, target in mapping.items():
        if header not in positions:
            violations.append((f"mapping.{header}", f'"{header}" is not a column of the file'))
        elif target not in FIELDS and target not in RESULT_PROPERTIES:
            violations.append(
                (f"mapping.{header}", f'unknown target "{target}": use {", ".join(FIELDS)} or a known property')
            )
        elif target != IGNORE:
            by_target[target].append(header)
    for target, mapped in by_target.items():
        if len(mapped) > 1:
            names = ", ".join(f'"{h}"' for h in mapped)
            violations.append(("mapping", f"{names} are all mapped to {target}; a target takes one column"))
    if not any(kind in by_target for kind in IDENTIFIERS):
        violations.append(("mapping", f"no column is mapped to an identifier ({', '.join(IDENTIFIERS)})"))
    wide = [
        (header, target) for target, mapped in by_target.items() if target in RESULT_PROPERTIES for header in mapped
    ]
    long = [target for target in (PROPERTY, VALUE) if target in by_target]
    if wide and any(target in by_target for target in _LONG_ONLY):
        violations.append(
            (
                "mapping",
                "columns are mapped both to properties (wide format) and to property/value/units/qualifier"
                " (long format); in the wide format a qualifier goes in the cell and units in the header",
            )
        )
    elif not wide and len(long) != 2:
        violations.append(
            ("mapping", "map a property and a value column (long format) or columns to properties (wide format)")
        )
    property_columns = []
    for header, target in sorted(wide, key=lambda pair: positions[pair[0]]):
        found = header_property(header)
        written = (column_units or {}).get(header, found[1] if found and found[0] == target else None)
        units = _blank_units(written or "")
        try:
            _conversion(target, units)
        except _Problem as problem:
            hint = f' (write them in the header, e.g. "{header} ({KNOWN_PROPERTIES[target].units})")'
            violations.append((f"mapping.{header}", problem.reason + (hint if written is None else "")))
        property_columns.append(PropertyColumn(positions[header], header, target, units))
    if violations:
        raise MappingError(
            "invalid column mapping: " + "; ".join(message for _, message in violations),
            detail="INVALID_MAPPING",
            field_violations=violations,
        )
    return ColumnPlan(
        format=ResultFormat.WIDE if wide else ResultFormat.LONG,
        headers=tuple(headers),
        identifiers=tuple((positions[by_target[kind][0]], kind) for kind in IDENTIFIERS if kind in by_target),
        fields={target: positions[mapped[0]] for target, mapped in by_target.items() if target in FIELDS},
        property_columns=tuple(property_columns),
    )


# --- rows ------------------------------------------------------------------------------------------------


class _Problem(Exception):
    """A row error in the making; `field` is the long-format field whose cell is at fault ("" for the value)."""

    def __init__(self, code: RowErrorCode, reason: str, field: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.field = field


def read_rows(plan: ColumnPlan, rows: Iterable[tuple[int, Sequence[str]]], facts: SubmissionFacts) -> RowsRead:
    """Validate (row number, cells) rows; row numbers are the caller's (the file's, blank rows counted)."""
    count = 0
    measurements: list[Measurement] = []
    errors: list[RowError] = []
    for row_number, cells in rows:
        count += 1
        if len(cells) != len(plan.headers):
            reason = f"expected {len(plan.headers)} cells, found {len(cells)}"
            errors.append(RowError(row_number, "", RowErrorCode.ROW_SHAPE, reason))
            continue
        try:
            sample = _sample(plan, cells, facts)
        except _RowProblem as problem:
            errors.append(RowError(row_number, problem.column, problem.code, problem.reason))
            continue
        common = _common(plan, row_number, cells, errors)
        if common is None:
            continue
        replicate, notes = common
        if plan.format is ResultFormat.LONG:
            cells_to_read = [_long_cell(plan, cells)]
        else:
            cells_to_read = [(c.header, c.property, cells[c.index], c.units, "") for c in plan.property_columns]
        for column, name, text, units, qualifier_text in cells_to_read:
            if plan.format is ResultFormat.WIDE and not text.strip():
                continue  # an empty wide cell is "no value"
            try:
                measurements.append(
                    _measurement(sample, name, text, units, qualifier_text, facts, replicate, notes, row_number)
                )
            except _Problem as problem:
                # Long format: the cell at fault (property, units, qualifier); else the value's column.
                at = problem.field in plan.fields and plan.format is ResultFormat.LONG
                where = plan.headers[plan.fields[problem.field]] if at else column
                known = property_name(name) or ""
                errors.append(RowError(row_number, where, problem.code, problem.reason, known))
    return RowsRead(count, tuple(measurements), tuple(errors))


class _RowProblem(_Problem):
    """A problem of the row as a whole (its identifiers), at the named column(s)."""

    def __init__(self, column: str, code: RowErrorCode, reason: str) -> None:
        super().__init__(code, reason)
        self.column = column


def _sample(plan: ColumnPlan, cells: Sequence[str], facts: SubmissionFacts) -> Sample:
    found: list[tuple[str, Sample]] = []
    for index, kind in plan.identifiers:
        text = cells[index]
        if not text.strip():
            continue
        try:
            found.append((text.strip(), facts.lookup(kind, text)))
        except _Problem as problem:
            raise _RowProblem(plan.headers[index], problem.code, problem.reason) from None
    if not found:
        columns = ", ".join(plan.headers[index] for index, _ in plan.identifiers)
        raise _RowProblem(columns, RowErrorCode.MISSING_IDENTIFIER, "no sample identifier in this row")
    first_text, sample = found[0]
    for text, other in found[1:]:
        if other != sample:
            columns = ", ".join(plan.headers[index] for index, _ in plan.identifiers)
            raise _RowProblem(
                columns,
                RowErrorCode.IDENTIFIER_MISMATCH,
                f"{_quote(first_text)} is sample {sample.sample_code} but {_quote(text)} is {other.sample_code}",
            )
    return sample


def _common(plan: ColumnPlan, row_number: int, cells: Sequence[str], errors: list[RowError]) -> tuple[str, str] | None:
    """The row's replicate label and notes (None, with an error recorded, when one is too long)."""
    values = []
    for target, limit in ((REPLICATE, MAX_LABEL_LENGTH), (NOTES, MAX_NOTES_LENGTH)):
        index = plan.fields.get(target)
        text = " ".join(cells[index].split()) if index is not None else ""
        if len(text) > limit:
            reason = f"{target} too long: {len(text)} characters (limit {limit})"
            errors.append(RowError(row_number, plan.headers[index or 0], RowErrorCode.TOO_LONG, reason))
            return None
        values.append(text)
    return values[0], values[1]


def _long_cell(plan: ColumnPlan, cells: Sequence[str]) -> tuple[str, str, str, str, str]:
    """(value column, property, value text, units text, qualifier text) of a long-format row."""

    def cell(target: str) -> str:
        index = plan.fields.get(target)
        return cells[index] if index is not None else ""

    return plan.headers[plan.fields[VALUE]], cell(PROPERTY), cell(VALUE), cell(UNITS), cell(QUALIFIER)


def _measurement(
    sample: Sample,
    name_text: str,
    value_text: str,
    units_text: str,
    qualifier_text: str,
    facts: SubmissionFacts,
    replicate: str,
    notes: str,
    row_number: int,
) -> Measurement:
    if not name_text.strip():
        raise _Problem(RowErrorCode.MISSING_PROPERTY, "no property named in this row", PROPERTY)
    name = property_name(name_text)
    if name is None:
        raise _Problem(RowErrorCode.UNKNOWN_PROPERTY, f"unknown property {_quote(name_text.strip())}", PROPERTY)
    if facts.properties and name not in facts.properties:
        reason = f"{name} is not asked for by this submission's specifications"
        raise _Problem(RowErrorCode.PROPERTY_NOT_REQUESTED, reason, PROPERTY)
    qualifier, number = _qualified_number(value_text, qualifier_text)
    units = _blank_units(units_text)
    prop = KNOWN_PROPERTIES[name]
    value = _round(_conversion(name, units)(number))
    low, high = prop.minimum, prop.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        written, converted = _with_units(number, units), _with_units(value, prop.units)
        shown = written if written == converted else f"{written} = {converted}"
        allowed = _with_units(f"{_fmt(low)}–{_fmt(high)}", prop.units)
        raise _Problem(RowErrorCode.OUT_OF_RANGE, f"{shown} is out of range for {name} (allowed {allowed})")
    if prop.value_type is ValueType.INTEGER and not value.is_integer():
        raise _Problem(RowErrorCode.NOT_AN_INTEGER, f"{name} is a count: {_fmt(value)} is not an integer")
    original = " ".join(f"{qualifier_text.strip()} {value_text.strip()} {units_text.strip()}".split())
    return Measurement(
        molecule_id=sample.molecule_id,
        sample_code=sample.sample_code,
        property=name,
        qualifier=qualifier,
        value=value,
        units=prop.units,
        replicate=replicate,
        notes=notes,
        row_number=row_number,
        original=original,
    )


_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")  # as the molecule import reads numbers
_LEADING_QUALIFIER = re.compile(r"^(<=|>=|[<>~=≤≥])\s*")
_QUALIFIERS = {q.value: q for q in Qualifier}


def _qualifier(text: str, field: str) -> Qualifier:
    found = _QUALIFIERS.get(text)
    if found is None:
        raise _Problem(RowErrorCode.BAD_QUALIFIER, f"unknown qualifier {_quote(text)} (use <, >, ~ or =)", field)
    return found


def _qualified_number(value_text: str, qualifier_text: str) -> tuple[Qualifier, float]:
    text = value_text.strip()
    if not text:
        raise _Problem(RowErrorCode.MISSING_VALUE, "no value")
    column = _qualifier(qualifier_text.strip(), QUALIFIER) if qualifier_text.strip() else None
    in_cell = None
    leading = _LEADING_QUALIFIER.match(text)
    if leading:
        in_cell = _qualifier(leading.group(1), "")
        text = text[leading.end() :]
    if column and in_cell and column != in_cell:
        raise _Problem(
            RowErrorCode.BAD_QUALIFIER, f"qualifier {column} and value {_quote(value_text.strip())} disagree"
        )
    if not _NUMBER.match(text):
        hint = ""
        if "," in text and _NUMBER.match(text.replace(",", ".", 1)):
            hint = " (use '.' as the decimal separator)"
        raise _Problem(RowErrorCode.NOT_A_NUMBER, f"not a number: {_quote(value_text.strip())}{hint}")
    number = float(text)
    if not math.isfinite(number):
        raise _Problem(RowErrorCode.NOT_A_NUMBER, f"not a finite number: {_quote(value_text.strip())}")
    return column or in_cell or Qualifier.EQUAL, number


# --- units -------------------------------------------------------------------------------------------------

_DIMENSIONLESS_WORDS = frozenset({"", "-", "–", "—"})
# A power-of-ten factor before the units: "10^-6 cm/s", "x10^-6 cm/s", "1e-6 cm/s".
_SCALE = re.compile(
    r"^(?:[x×]\s*)?(?:10\s*(?:\^|\*\*)\s*([+-]?\d{1,2})|1(?:\.0*)?[eE]([+-]?\d{1,2}))\s*[*·×]?\s*(?=\S)"
)
# Units text pint may read: no multi-digit numbers and no number raised to a power (pint computes those
# exactly: "9**9**9" would take minutes).
_UNITS_TEXT = re.compile(r"^[A-Za-zµμ°Å%²³/*·^().\s+\-0-9]{1,40}$")
_UNSAFE = re.compile(r"\d{2,}|\d\s*(?:\*\*|\^)")


@cache
def _registry() -> pint.UnitRegistry:
    return pint.UnitRegistry()


def _blank_units(text: str) -> str:
    text = " ".join(text.split())
    return "" if text in _DIMENSIONLESS_WORDS else text


@lru_cache(maxsize=4096)
def _conversion(name: str, units: str) -> _Converter:
    """How a number written in `units` becomes the property's canonical units; raises _Problem."""
    canonical = KNOWN_PROPERTIES[name].units
    if not canonical:
        if units:
            reason = f"{name} is dimensionless: leave the units empty, not {_quote(units)}"
            raise _Problem(RowErrorCode.INCOMPATIBLE_UNITS, reason, UNITS)
        return _Converter(1.0, None, None)
    if not units:
        raise _Problem(RowErrorCode.MISSING_UNITS, f"no units for {name} (its canonical units are {canonical})", UNITS)
    scale, rest = 1.0, units
    found = _SCALE.match(units)
    if found:
        scale = 10.0 ** int(found.group(1) or found.group(2))
        rest = units[found.end() :]
    registry = _registry()
    parsed = _parse_units(registry, rest)
    if parsed is None:
        raise _Problem(RowErrorCode.UNKNOWN_UNITS, f"unknown units {_quote(units)}", UNITS)
    target = registry.parse_units(canonical)
    if parsed.dimensionality != target.dimensionality:
        reason = f"{_quote(units)} ({parsed.dimensionality}) cannot be converted to {canonical} for {name}"
        raise _Problem(RowErrorCode.INCOMPATIBLE_UNITS, reason + _hint(rest, target), UNITS)
    return _Converter(scale, parsed, target)


@dataclass(frozen=True)
class _Converter:
    scale: float
    source: pint.Unit | None
    target: pint.Unit | None

    def __call__(self, number: float) -> float:
        if self.source is None or self.target is None:
            return number * self.scale
        quantity = _registry().Quantity(number * self.scale, self.source)
        return float(quantity.to(self.target).magnitude)


def _parse_units(registry: pint.UnitRegistry, text: str) -> pint.Unit | None:
    text = text.replace("·", "*").strip()
    if not _UNITS_TEXT.match(text) or _UNSAFE.search(text):
        return None
    try:
        return registry.parse_units(text)
    except (pint.errors.PintError, ValueError, TypeError, AttributeError, SyntaxError, ArithmeticError, TokenError):
        return None  # ArithmeticError: "1/0" is a ZeroDivisionError; TokenError: "(" left open


def _hint(text: str, target: pint.Unit) -> str:
    """A likely slip: a lowercase molar (um is micrometre) or C for °C (C is coulomb)."""
    candidates = [text[:-1] + "M"] if text.endswith("m") else []
    candidates += ["°" + text] if text in ("C", "F") else []
    for candidate in candidates:
        parsed = _parse_units(_registry(), candidate)
        if parsed is not None and parsed.dimensionality == target.dimensionality:
            return f"; did you mean {candidate}?"
    return ""


def _round(number: float) -> float:
    rounded = float(f"{number:.{SIGNIFICANT_DIGITS}g}")
    return rounded if rounded else 0.0  # -0 is 0 (one value, one hash)


def _with_units(number: float | str, units: str) -> str:
    return f"{_fmt(number) if isinstance(number, float | int) else number} {units}".rstrip()


def _fmt(number: float | None) -> str:
    return "unbounded" if number is None else f"{number:.{SIGNIFICANT_DIGITS}g}"


def _quote(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


# --- the result set ------------------------------------------------------------------------------------------


def build_result_set(plan: ColumnPlan, parts: Iterable[RowsRead], facts: SubmissionFacts) -> ResultSet:
    """Put the chunks of one file together: duplicate replicates, aggregates, hash, QC summary."""
    rows = 0
    measurements: list[Measurement] = []
    errors: list[RowError] = []
    for part in parts:
        rows += part.rows
        measurements.extend(part.measurements)
        errors.extend(part.errors)
    replicate_column = plan.headers[plan.fields[REPLICATE]] if REPLICATE in plan.fields else ""
    measurements, duplicates = _without_duplicate_replicates(measurements, replicate_column)
    errors.extend(duplicates)
    measurements.sort(key=lambda m: (m.canonical(), m.row_number))
    errors.sort(key=lambda e: (e.row_number, e.column, e.code))
    aggregates = _aggregates(measurements)
    digest = hashlib.sha256(
        canonical_json({"version": HASH_VERSION, "measurements": [m.canonical() for m in measurements]})
    ).hexdigest()
    return ResultSet(
        tuple(measurements), aggregates, tuple(errors), _qc(rows, measurements, errors, aggregates, facts), digest
    )


def validate_results(
    headers: Sequence[str],
    rows: Iterable[tuple[int, Sequence[str]]],
    mapping: Mapping[str, str],
    facts: SubmissionFacts,
    *,
    column_units: Mapping[str, str] | None = None,
) -> ResultSet:
    """The whole file at once: plan the columns, read every row, build the result set."""
    plan = plan_columns(headers, mapping, column_units=column_units)
    return build_result_set(plan, [read_rows(plan, rows, facts)], facts)


def numbered(rows: Iterable[Sequence[str]], first: int = 1) -> Iterable[tuple[int, Sequence[str]]]:
    """Rows numbered from `first` (row 1 is the first after the header), for callers without numbers."""
    return enumerate(rows, first)


def _without_duplicate_replicates(
    measurements: list[Measurement], column: str
) -> tuple[list[Measurement], list[RowError]]:
    labelled: dict[tuple[str, str, str], list[Measurement]] = defaultdict(list)
    for m in measurements:
        if m.replicate:
            labelled[(m.molecule_id, m.property, m.replicate)].append(m)
    rejected = {id(m) for group in labelled.values() if len(group) > 1 for m in group}
    errors = []
    for (_, name, label), group in labelled.items():
        if len(group) > 1:
            rows = ", ".join(str(n) for n in sorted({m.row_number for m in group}))
            for m in group:
                reason = f"replicate {_quote(label)} of {m.sample_code} {name} appears in rows {rows}"
                errors.append(RowError(m.row_number, column, RowErrorCode.DUPLICATE_REPLICATE, reason, name))
    return [m for m in measurements if id(m) not in rejected], errors


def _aggregates(measurements: Sequence[Measurement]) -> tuple[Aggregate, ...]:
    groups: dict[tuple[str, str], list[Measurement]] = defaultdict(list)
    for m in measurements:
        groups[(m.molecule_id, m.property)].append(m)
    return tuple(_aggregate(group) for _, group in sorted(groups.items()))


def _aggregate(group: Sequence[Measurement]) -> Aggregate:
    first = group[0]
    numbers = sorted(m.value for m in group if m.qualifier not in CENSORED)  # sorted: the sum's rounding is fixed
    directions = {m.qualifier for m in group if m.qualifier in CENSORED}
    # fmean's rounding may step just outside the values (three times 87.65 gives 87.65000000000002): clamp.
    mean = min(max(statistics.fmean(numbers), numbers[0]), numbers[-1]) if numbers else None
    sd = statistics.stdev(numbers) if len(numbers) >= 2 else None
    qualifier: Qualifier | None
    value: float | None
    if not directions:
        approximate = any(m.qualifier is Qualifier.APPROXIMATE for m in group)
        qualifier, value = (Qualifier.APPROXIMATE if approximate else Qualifier.EQUAL), mean
    elif len(directions) == 1:
        qualifier = directions.pop()
        everything = [m.value for m in group]
        value = max(everything) if qualifier is Qualifier.LESS else min(everything)
    else:
        qualifier, value = None, None
    return Aggregate(
        molecule_id=first.molecule_id,
        sample_code=first.sample_code,
        property=first.property,
        units=first.units,
        qualifier=qualifier,
        value=value,
        mean=mean,
        sd=sd,
        n=len(numbers),
        n_censored=len(group) - len(numbers),
    )


def _qc(
    rows: int,
    measurements: Sequence[Measurement],
    errors: Sequence[RowError],
    aggregates: Sequence[Aggregate],
    facts: SubmissionFacts,
) -> QcSummary:
    accepted: dict[str, int] = defaultdict(int)
    rejected: dict[str, int] = defaultdict(int)
    samples: dict[str, set[str]] = defaultdict(set)
    for m in measurements:
        accepted[m.property] += 1
        samples[m.property].add(m.molecule_id)
    for e in errors:
        if e.property:
            rejected[e.property] += 1
    names = sorted(set(accepted) | set(rejected) | set(facts.properties))
    per_property = {name: PropertyQc(accepted[name], rejected[name], len(samples[name])) for name in names}
    missing = tuple(
        (sample.sample_code, name)
        for sample in facts.samples
        for name in sorted(facts.properties)
        if sample.molecule_id not in samples[name]
    )
    return QcSummary(
        rows=rows,
        rows_rejected=len({e.row_number for e in errors}),
        values_accepted=len(measurements),
        errors=len(errors),
        per_property=per_property,
        missing=missing,
        conflicting=sum(1 for a in aggregates if a.conflicting),
    )
