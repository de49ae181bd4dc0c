"""Properties of the CRO results CSV validation (services/cro/domain/results.py) on generated files: any cells
give measurements or row errors (never an exception), any mapping a plan or a MappingError; accepted values
are finite, in range and in canonical units; the hash ignores row order and how the units were written;
censored replicates are never averaged. (test_cro_results.py holds the hand-worked examples and the
nM = 1000 µM, whitespace and aggregate-rule properties.)"""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.cro.domain.results import (
    FIELDS,
    RESULT_PROPERTIES,
    MappingError,
    ResultSet,
    Sample,
    SubmissionFacts,
    numbered,
    plan_columns,
    validate_results,
)
from services.cro.domain.vocabulary import CENSORED
from services.runtime.properties import KNOWN_PROPERTIES
from tests.unit.test_cro_results import LONG_MAPPING as BASE_LONG_MAPPING

FAST = settings(max_examples=200, deadline=None)
SLOWER = settings(max_examples=100, deadline=None)  # pint converts each value: fewer, bigger examples

SAMPLES = (
    Sample("5d0c1c1e-0000-4000-8000-000000000001", "S-1", "ACME-000001", "BSYNRYMUTXBXSQ-UHFFFAOYSA-N"),
    Sample("5d0c1c1e-0000-4000-8000-000000000002", "S-2", "ACME-000002"),
    Sample("5d0c1c1e-0000-4000-8000-000000000003", "S-3", "ACME-000002"),  # shares a number: ambiguous
)
FACTS = SubmissionFacts(SAMPLES, frozenset())
ASKING = SubmissionFacts(SAMPLES, frozenset({"ic50", "pka", "half_life"}))
LONG = ["Sample", "Registration", "Property", "Value", "Units", "Qualifier", "Replicate", "Notes"]
LONG_MAPPING = {**BASE_LONG_MAPPING, "Registration": "registration_number"}

junk = st.text(max_size=12)
identifiers = st.one_of(st.sampled_from(["S-1", " s-2 ", "S-3", "S-9", "", "ACME-000002", "acme-000001"]), junk)
property_names = st.one_of(
    st.sampled_from([*sorted(RESULT_PROPERTIES), "IC50", "Half-life", "custom_x", "", "logp "]), junk
)
values = st.one_of(
    st.sampled_from(["0", "-0", "1e308", "-1e308", "1e-320", "nan", "inf", "1,5", "<=3", "≤3", "<", "~ 4", " >1e3 "]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.tuples(st.sampled_from(["", "<", ">", "~", "=", "<>"]), st.integers(-(10**9), 10**9)).map(
        lambda qv: f"{qv[0]}{qv[1]}"
    ),
    junk,
)
units = st.one_of(
    st.sampled_from(
        ["nM", "uM", "µM", "μM", "mM", "M", "pM", "um", "", "-", "–", "h", "min", "s", "day", "%", "K", "degC",
         "°C", "C", "degF", "mg/mL", "g/L", "10^-6 cm/s", "1e-6 cm/s", "x10^99 nM", "10^-99 nM", "1/0", "0/0",
         "m/0", "nM**2", "nM^2", "L/kg", "mL/min/kg", "Å²", "kg", "9**9**9", "(", "nM)", "1e99 h"]
    ),
    junk,
)  # fmt: skip
qualifiers = st.one_of(st.sampled_from(["", "<", ">", "~", "=", "<=", "≥", " < "]), junk)
labels = st.one_of(st.sampled_from(["", "1", "2", " 1 ", "a" * 65]), junk)
notes = st.one_of(st.sampled_from(["", "plate  1", "x" * 1001, "=cmd|' /C calc'!A0"]), junk)
PAIRS = [("ic50", "nM"), ("IC50", "uM"), ("pka", ""), ("half_life", "min"), ("half_life", "h"), ("num_rings", "-")]
plausible_row = st.tuples(
    st.sampled_from(["S-1", "S-2", " s-1 "]),
    st.sampled_from(["", "", "ACME-000001"]),
    st.sampled_from(PAIRS),
    st.tuples(st.sampled_from(["", "<", ">", "~"]), st.integers(0, 99)).map(lambda qv: f"{qv[0]}{qv[1]}"),
    st.sampled_from(["", "", "", "="]),
    st.sampled_from(["", "1", "2"]),
    st.sampled_from(["", "ok"]),
).map(lambda r: (r[0], r[1], r[2][0], r[3], r[2][1], *r[4:]))
hostile_row = st.tuples(identifiers, identifiers, property_names, values, units, qualifiers, labels, notes)
long_rows = st.lists(st.one_of(plausible_row, hostile_row).map(list), max_size=12)


def check_accounted(result: ResultSet, rows: int) -> None:
    """Every row gave a measurement or an error; what is accepted is finite, in range, in canonical units."""
    assert result.qc.rows == rows
    assert result.qc.values_accepted == len(result.measurements)
    for m in result.measurements:
        prop = KNOWN_PROPERTIES[m.property]
        assert math.isfinite(m.value) and m.units == prop.units
        assert prop.minimum is None or m.value >= prop.minimum
        assert prop.maximum is None or m.value <= prop.maximum
        assert not str(m.value).startswith("-0")  # -0 and 0 are one value (one hash)
    for a in result.aggregates:
        censored = [m for m in result.measurements if (m.molecule_id, m.property) == (a.molecule_id, a.property)]
        assert a.n + a.n_censored == len(censored)
    assert all(e.reason for e in result.errors)
    assert len(result.sha256) == 64


@FAST
@given(long_rows, st.sampled_from([FACTS, ASKING]))
@example([["S-1", "", "ic50", "-0", "nM", "", "", ""]], FACTS)
@example([["S-1", "", "ic50", "1e308", "x10^99 nM", "", "", ""]], FACTS)
@example([["S-1", "", "ic50", "1", "1/0", "", "", ""]], FACTS)
def test_any_long_rows_give_measurements_or_row_errors(rows: list[list[str]], facts: SubmissionFacts) -> None:
    result = validate_results(LONG, numbered(rows), LONG_MAPPING, facts)
    check_accounted(result, len(rows))
    accounted = Counter(m.row_number for m in result.measurements) + Counter(e.row_number for e in result.errors)
    assert set(accounted) == set(range(1, len(rows) + 1))  # one value per row: a measurement or errors


headers = st.one_of(
    st.sampled_from(
        ["IC50 (nM)", "IC50 [uM]", "ic50_uM", "IC50", "pKa", "Half-life (min)", "Tm (°C)", "Sol mg/mL", "logD",
         "Rings", "Permeability (10^-6 cm/s)", "IC50 (um)", "IC50 ()", "IC50 (nM", "(nM)", ""]
    ),
    junk,
)  # fmt: skip


WIDE_COLUMNS = [
    ("IC50 (nM)", "ic50"), ("EC50 [uM]", "ec50"), ("pKa", "pka"), ("Half-life (min)", "half_life"),
    ("Rings", "num_rings"), ("Melting point (°C)", "melting_point"), ("Permeability (10^-6 cm/s)", "permeability"),
    ("Kd_nM", "binding_affinity"), ("Bioavailability (%)", "bioavailability"),
]  # fmt: skip
targets = st.sampled_from([*sorted(RESULT_PROPERTIES), "ignore", "value", "nonsense"])


@st.composite
def wide_files(draw: st.DrawFn) -> tuple[list[str], dict[str, str], dict[str, str] | None, list[list[str]]]:
    """Mostly sensible columns (a header and its property), some arbitrary headers and targets."""
    sensible = st.sampled_from(WIDE_COLUMNS)
    columns = draw(st.lists(st.one_of(sensible, sensible, sensible, st.tuples(headers, targets)), min_size=1,
                            max_size=4, unique_by=(lambda c: c[0].strip().casefold(), lambda c: c[1])))  # fmt: skip
    names = [name for name, _ in columns]
    mapping = {"Key": "sample_code", **dict(columns)}
    overrides = st.dictionaries(st.sampled_from(names), units, max_size=2)
    column_units = draw(st.one_of(st.none(), st.none(), st.none(), overrides))
    numbers = st.tuples(st.sampled_from(["", "<", ">", "~"]), st.integers(0, 99)).map(lambda qv: f"{qv[0]}{qv[1]}")
    cells = st.lists(st.one_of(numbers, values, st.just("")), min_size=len(names), max_size=len(names))
    keys = st.one_of(st.sampled_from(["S-1", "S-2"]), identifiers)
    rows = draw(st.lists(st.tuples(keys, cells).map(lambda r: [r[0], *r[1]]), max_size=8))
    return ["Key", *names], mapping, column_units, rows


@FAST
@given(wide_files())
# An open bracket once reached pint's tokenizer (TokenError).
@example((["Key", "IC50 (nM)"], {"Key": "sample_code", "IC50 (nM)": "ic50"}, {"IC50 (nM)": "("}, []))
def test_any_wide_file_gives_a_mapping_error_or_measurements_and_row_errors(
    file: tuple[list[str], dict[str, str], dict[str, str] | None, list[list[str]]],
) -> None:
    columns, mapping, column_units, rows = file
    try:
        result = validate_results(columns, numbered(rows), mapping, FACTS, column_units=column_units)
    except MappingError as error:
        assert error.field_violations
        return
    check_accounted(result, len(rows))


@FAST
@given(
    st.lists(st.one_of(headers, st.sampled_from(LONG)), max_size=6),
    st.dictionaries(
        st.one_of(headers, st.sampled_from(LONG)),
        st.one_of(st.sampled_from([*FIELDS, *sorted(RESULT_PROPERTIES)]), junk),
        max_size=6,
    ),
    st.one_of(st.none(), st.dictionaries(headers, units, max_size=3)),
)
def test_any_mapping_gives_a_plan_or_a_mapping_error(
    columns: list[str], mapping: dict[str, str], column_units: dict[str, str] | None
) -> None:
    try:
        plan = plan_columns(columns, mapping, column_units=column_units)
    except MappingError as error:
        assert error.field_violations and all(message for _, message in error.field_violations)
        return
    assert plan.identifiers and all(0 <= index < len(columns) for index, _ in plan.identifiers)


# --- the same content written differently ------------------------------------------------------------------

# Ways to write a value given in nM (an exact decimal, so both spellings are the same number).
NANOMOLAR = {"nM": 0, "uM": -3, "µM": -3, "μM": -3, "pM": 3, "mM": -6, "M": -9, "10^-9 M": 0, "1e-3 uM": 0}


def spelled(nanomolar: Decimal, units: str) -> str:
    return format(nanomolar.scaleb(NANOMOLAR[units]).normalize(), "f")


measurements = st.lists(
    st.tuples(
        st.sampled_from(["S-1", "S-2"]),
        st.sampled_from(["ic50", "ec50", "binding_affinity"]),
        st.sampled_from(["", "<", ">", "~"]),
        st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
        st.sampled_from(["", "1", "2", "3"]),
    ),
    min_size=1,
    max_size=10,
)


def written(content: list[tuple[str, str, str, Decimal, str]], units: list[str]) -> list[list[str]]:
    return [
        [code, "", name, qualifier + spelled(nanomolar, unit), unit, "", label, ""]
        for (code, name, qualifier, nanomolar, label), unit in zip(content, units, strict=True)
    ]


@FAST
@given(measurements, st.data())
def test_the_hash_ignores_row_order_and_the_units_written(
    content: list[tuple[str, str, str, Decimal, str]], data: st.DataObject
) -> None:
    reference = validate_results(LONG, numbered(written(content, ["nM"] * len(content))), LONG_MAPPING, FACTS)
    order = data.draw(st.permutations(range(len(content))))
    units = data.draw(st.lists(st.sampled_from(sorted(NANOMOLAR)), min_size=len(content), max_size=len(content)))
    rewritten = written([content[i] for i in order], [units[i] for i in order])
    again = validate_results(LONG, numbered(rewritten), LONG_MAPPING, FACTS)
    assert again.sha256 == reference.sha256
    assert [m.canonical() for m in again.measurements] == [m.canonical() for m in reference.measurements]
    assert again.aggregates == reference.aggregates
    assert len(again.errors) == len(reference.errors)  # duplicate replicate labels, wherever the rows are


@FAST
@given(st.sampled_from(["-0", "0", "0.0", "-0.000", "+0", "0e5", "-0e-5"]), st.sampled_from(sorted(NANOMOLAR)))
@example("-0", "nM")  # was -0.0, with another hash than 0
def test_zero_is_zero_however_it_is_written(zero: str, unit: str) -> None:
    reference = validate_results(LONG, numbered([["S-1", "", "ic50", "0", "nM", "", "", ""]]), LONG_MAPPING, FACTS)
    again = validate_results(LONG, numbered([["S-1", "", "ic50", zero, unit, "", "", ""]]), LONG_MAPPING, FACTS)
    assert again.sha256 == reference.sha256 and str(again.measurements[0].value) == "0.0"


@SLOWER
@given(
    st.lists(
        st.tuples(st.sampled_from(["", "<", ">", "~", "="]), st.decimals(min_value=0, max_value=1000, places=2)),
        min_size=1,
        max_size=6,
    )
)
@example([("", Decimal("87.65"))] * 3)  # the mean was 87.65000000000002, above every replicate
def test_censored_replicates_are_never_averaged_whatever_their_units(replicates: list[tuple[str, Decimal]]) -> None:
    rows = [
        ["S-1", "", "ic50", q + spelled(v, unit), unit, "", "", ""]
        for (q, v), unit in zip(replicates, ["uM", "nM", "pM", "M"] * 2, strict=False)
    ]
    result = validate_results(LONG, numbered(rows), LONG_MAPPING, FACTS)
    (aggregate,) = result.aggregates
    uncensored = [m.value for m in result.measurements if m.qualifier not in CENSORED]
    assert aggregate.n == len(uncensored) and aggregate.n_censored == len(rows) - len(uncensored)
    if uncensored:
        assert aggregate.mean is not None and min(uncensored) <= aggregate.mean <= max(uncensored)
        assert math.isclose(aggregate.mean, sum(uncensored) / len(uncensored), rel_tol=1e-12)
        if len(set(uncensored)) == 1:
            assert aggregate.mean == uncensored[0] and aggregate.sd in (None, 0.0)
    else:
        assert aggregate.mean is None and aggregate.sd is None
