"""A CRO results CSV validated against its submission, without I/O: both formats, the column mapping, every
unit conversion (expected numbers worked out by hand), qualifiers, replicates, every row error, the hash
and the QC summary."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.cro.domain.results import (
    MappingError,
    ResultFormat,
    ResultSet,
    RowErrorCode,
    Sample,
    SubmissionFacts,
    build_result_set,
    numbered,
    plan_columns,
    read_rows,
    suggest_mapping,
    validate_results,
)
from services.cro.domain.vocabulary import CENSORED, Qualifier
from services.runtime.properties import KNOWN_PROPERTIES

INCHI_1 = "BSYNRYMUTXBXSQ-UHFFFAOYSA-N"
INCHI_2 = "RYYVLZVUVIJVGH-UHFFFAOYSA-N"
SAMPLES = (
    Sample("5d0c1c1e-0000-4000-8000-000000000001", "S-7F3K-01", "ACME-000001", INCHI_1),
    Sample("5d0c1c1e-0000-4000-8000-000000000002", "S-7F3K-02", "ACME-000002", INCHI_2),
    Sample("5d0c1c1e-0000-4000-8000-000000000003", "S-7F3K-03", "ACME-000003"),
)
M1, M2, M3 = (s.molecule_id for s in SAMPLES)
EVERYTHING = frozenset(
    {
        "ic50", "ec50", "binding_affinity", "solubility", "bioavailability", "half_life", "permeability",
        "clearance", "volume_of_distribution", "melting_point", "boiling_point", "pka", "logd", "num_rings",
    }
)  # fmt: skip
FACTS = SubmissionFacts(SAMPLES, EVERYTHING)
LONG = ["Sample", "Property", "Value", "Units", "Qualifier", "Replicate", "Notes"]
LONG_MAPPING = {
    "Sample": "sample_code",
    "Property": "property",
    "Value": "value",
    "Units": "units",
    "Qualifier": "qualifier",
    "Replicate": "replicate",
    "Notes": "notes",
}


def long(*rows: list[str], facts: SubmissionFacts = FACTS) -> ResultSet:
    """Rows of (sample, property, value, units[, qualifier, replicate, notes]), short ones padded."""
    padded = [row + [""] * (len(LONG) - len(row)) for row in rows]
    return validate_results(LONG, numbered(padded), LONG_MAPPING, facts)


def only_value(result: ResultSet) -> tuple[Qualifier, float, str]:
    assert not result.errors, result.errors
    (m,) = result.measurements
    return m.qualifier, m.value, m.units


def only_error(result: ResultSet) -> tuple[int, str, RowErrorCode]:
    assert not result.measurements, result.measurements
    (e,) = result.errors
    assert e.reason
    return e.row_number, e.column, e.code


# --- the column mapping ----------------------------------------------------------------------------------


def test_suggested_mapping_for_a_long_file() -> None:
    headers = ["Sample ID", "Endpoint", "Result", "Unit", "Operator", "Rep", "Comments", "Plate"]
    assert suggest_mapping(headers) == {
        "Sample ID": "sample_code",
        "Endpoint": "property",
        "Result": "value",
        "Unit": "units",
        "Operator": "qualifier",
        "Rep": "replicate",
        "Comments": "notes",
        "Plate": "ignore",
    }
    assert suggest_mapping(LONG) == LONG_MAPPING


def test_suggested_mapping_for_a_wide_file() -> None:
    headers = ["Registration No", "InChIKey", "IC50 (uM)", "t1/2_h", "Half-life [min]", "pKa", "Ki (nM)", "Remarks"]
    assert suggest_mapping(headers) == {
        "Registration No": "registration_number",
        "InChIKey": "inchi_key",
        "IC50 (uM)": "ic50",
        "t1/2_h": "half_life",  # leftmost wins: a target takes one column
        "Half-life [min]": "ignore",
        "pKa": "pka",
        "Ki (nM)": "binding_affinity",
        "Remarks": "notes",
    }


def test_a_long_file_does_not_get_property_columns_suggested() -> None:
    assert suggest_mapping(["Sample", "Property", "Value", "IC50"])["IC50"] == "ignore"


def test_a_field_name_beats_a_synonym() -> None:
    assert suggest_mapping(["code", "sample_code"]) == {"code": "ignore", "sample_code": "sample_code"}


@pytest.mark.parametrize(
    ("headers", "mapping", "problem"),
    [
        (["Sample", "Value"], {"Sample": "sample_code", "Value": "value"}, "map a property and a value column"),
        (["Property", "Value"], {"Property": "property", "Value": "value"}, "no column is mapped to an identifier"),
        (
            ["Sample", "IC50 (nM)", "Qualifier"],
            {"Sample": "sample_code", "IC50 (nM)": "ic50", "Qualifier": "qualifier"},
            "both to properties (wide format) and to property/value/units/qualifier",
        ),
        (
            ["Sample", "Property", "Value", "Result"],
            {"Sample": "sample_code", "Property": "property", "Value": "value", "Result": "value"},
            '"Value", "Result" are all mapped to value',
        ),
        (["Sample", "X"], {"Sample": "sample_code", "X": "smiles"}, 'unknown target "smiles"'),
        (["Sample", "X"], {"Sample": "sample_code", "Y": "ic50"}, '"Y" is not a column of the file'),
        (["Sample", "sample"], {"Sample": "sample_code"}, 'duplicate column name "sample"'),
        (["Sample", "IC50"], {"Sample": "sample_code", "IC50": "ic50"}, 'write them in the header, e.g. "IC50 (nM)"'),
        (["Sample", "IC50 (kg)"], {"Sample": "sample_code", "IC50 (kg)": "ic50"}, "'kg' ([mass]) cannot be converted"),
        (["Sample", "pKa (%)"], {"Sample": "sample_code", "pKa (%)": "pka"}, "pka is dimensionless"),
    ],
)
def test_mappings_that_cannot_be_read(headers: list[str], mapping: dict[str, str], problem: str) -> None:
    with pytest.raises(MappingError) as raised:
        plan_columns(headers, mapping)
    assert raised.value.code == "VALIDATION_ERROR" and raised.value.detail == "INVALID_MAPPING"
    assert any(problem in message for _, message in raised.value.field_violations), raised.value.field_violations


def test_plan_knows_the_format_and_where_things_are() -> None:
    plan = plan_columns(LONG, LONG_MAPPING)
    assert plan.format is ResultFormat.LONG and plan.identifiers == ((0, "sample_code"),)
    wide = plan_columns(["IC50 (uM)", "Sample", "pKa"], {"Sample": "sample_code", "IC50 (uM)": "ic50", "pKa": "pka"})
    assert wide.format is ResultFormat.WIDE
    assert [(c.index, c.property, c.units) for c in wide.property_columns] == [(0, "ic50", "uM"), (2, "pka", "")]


# --- the long format -------------------------------------------------------------------------------------


def test_a_long_file_becomes_canonical_measurements() -> None:
    result = long(
        ["S-7F3K-01", "IC50", "0.5", "uM", "", "1", "  first   plate "],
        ["s-7f3k-01", "ic50", "450", "nM", "=", "2"],
        ["S-7F3K-02", "Half-life", "90", "min"],
        ["S-7F3K-02", "pKa", "4.2", "–"],
    )
    assert not result.errors
    got = {(m.molecule_id, m.property, m.replicate): (m.qualifier, m.value, m.units) for m in result.measurements}
    assert got == {
        (M1, "ic50", "1"): (Qualifier.EQUAL, 500.0, "nM"),  # 0.5 × 1000
        (M1, "ic50", "2"): (Qualifier.EQUAL, 450.0, "nM"),
        (M2, "half_life", ""): (Qualifier.EQUAL, 1.5, "h"),  # 90 / 60
        (M2, "pka", ""): (Qualifier.EQUAL, 4.2, ""),
    }
    first = next(m for m in result.measurements if m.replicate == "1")
    assert (first.sample_code, first.notes, first.row_number, first.original) == (
        "S-7F3K-01", "first plate", 1, "0.5 uM",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("column", "cell"),
    [("Sample", "S-7F3K-02"), ("Reg", "acme-000002"), ("Key", INCHI_2.lower()), ("Id", M2.upper())],
)
def test_each_identifier_kind_names_the_sample(column: str, cell: str) -> None:
    headers = ["Sample", "Reg", "Key", "Id", "Property", "Value", "Units"]
    mapping = {
        "Sample": "sample_code", "Reg": "registration_number", "Key": "inchi_key", "Id": "molecule_id",
        "Property": "property", "Value": "value", "Units": "units",
    }  # fmt: skip
    row = ["" if h != column else cell for h in headers[:4]] + ["ic50", "10", "nM"]
    result = validate_results(headers, numbered([row]), mapping, FACTS)
    assert [(m.molecule_id, m.sample_code) for m in result.measurements] == [(M2, "S-7F3K-02")]


def test_identifiers_that_agree_are_fine_and_that_disagree_are_an_error() -> None:
    headers = ["Sample", "Reg", "Property", "Value", "Units"]
    mapping = {"Sample": "sample_code", "Reg": "registration_number", "Property": "property", "Value": "value",
               "Units": "units"}  # fmt: skip
    rows = [["S-7F3K-01", "ACME-000001", "ic50", "1", "nM"], ["S-7F3K-01", "ACME-000002", "ic50", "1", "nM"]]
    result = validate_results(headers, numbered(rows), mapping, FACTS)
    assert [m.row_number for m in result.measurements] == [1]
    (error,) = result.errors
    assert (error.row_number, error.column, error.code) == (2, "Sample, Reg", RowErrorCode.IDENTIFIER_MISMATCH)
    assert "S-7F3K-01" in error.reason and "S-7F3K-02" in error.reason


# --- the wide format -------------------------------------------------------------------------------------


def test_a_wide_file_with_units_in_the_headers() -> None:
    headers = ["Sample", "IC50 (uM)", "Solubility [ug/mL]", "t1/2_min", "pKa", "Notes", "Replicate"]
    rows = [
        ["S-7F3K-01", "<0.1", "250", "90", "4.5", " batch 7 ", "1"],
        ["S-7F3K-02", "3", "", "", "abc", "", "1"],
    ]
    result = validate_results(headers, numbered(rows), suggest_mapping(headers), FACTS)
    got = {(m.molecule_id, m.property): (m.qualifier, m.value, m.units, m.notes) for m in result.measurements}
    assert got == {
        (M1, "ic50"): (Qualifier.LESS, 100.0, "nM", "batch 7"),  # 0.1 × 1000
        (M1, "solubility"): (Qualifier.EQUAL, 0.25, "mg/mL", "batch 7"),  # 250 / 1000
        (M1, "half_life"): (Qualifier.EQUAL, 1.5, "h", "batch 7"),  # 90 / 60
        (M1, "pka"): (Qualifier.EQUAL, 4.5, "", "batch 7"),
        (M2, "ic50"): (Qualifier.EQUAL, 3000.0, "nM", ""),  # 3 × 1000; empty cells are no value
    }
    (error,) = result.errors  # the bad cell only: the row's other values stay
    assert (error.row_number, error.column, error.code, error.property) == (2, "pKa", RowErrorCode.NOT_A_NUMBER, "pka")


def test_column_units_give_or_override_the_header_units() -> None:
    headers = ["Sample", "IC50", "EC50 (nM)"]
    mapping = {"Sample": "sample_code", "IC50": "ic50", "EC50 (nM)": "ec50"}
    plan = plan_columns(headers, mapping, column_units={"IC50": "µM", "EC50 (nM)": "pM"})
    read = read_rows(plan, numbered([["S-7F3K-03", "2", "500"]]), FACTS)
    assert {(m.property, m.value) for m in read.measurements} == {("ic50", 2000.0), ("ec50", 0.5)}


def test_a_wide_column_not_asked_for_is_an_error_in_each_row_that_has_a_value() -> None:
    facts = SubmissionFacts(SAMPLES, frozenset({"ic50"}))
    headers = ["Sample", "IC50 (nM)", "LogD"]
    rows = [["S-7F3K-01", "5", "1.2"], ["S-7F3K-02", "6", ""]]
    result = validate_results(headers, numbered(rows), suggest_mapping(headers), facts)
    assert len(result.measurements) == 2
    assert [(e.row_number, e.column, e.code) for e in result.errors] == [
        (1, "LogD", RowErrorCode.PROPERTY_NOT_REQUESTED)
    ]


# --- units -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "units", "expected"),
    [
        ("ic50", "0.5", "uM", 500.0),  # 0.5 × 1000 (not 499.99999999999994)
        ("ic50", "0.5", "µM", 500.0),  # micro sign U+00B5
        ("ic50", "0.5", "μM", 500.0),  # Greek mu U+03BC
        ("ic50", "1200", "nM", 1200.0),
        ("ic50", "3", "nmol/L", 3.0),
        ("ic50", "2e-7", "M", 200.0),  # 2e-7 × 1e9
        ("ec50", "250", "pM", 0.25),  # 250 / 1000
        ("binding_affinity", "0.75", "mM", 750000.0),  # 0.75 × 1e6
        ("solubility", "250", "µg/mL", 0.25),  # 250 / 1000
        ("solubility", "0.5", "ug/mL", 0.0005),
        ("solubility", "12", "mg/L", 0.012),  # mg/L = µg/mL
        ("solubility", "3", "g/L", 3.0),  # g/L = mg/mL
        ("solubility", "1.5", "mg/mL", 1.5),
        ("bioavailability", "45", "%", 45.0),
        ("bioavailability", "45", "percent", 45.0),
        ("half_life", "90", "min", 1.5),  # 90 / 60
        ("half_life", "5400", "s", 1.5),  # 5400 / 3600
        ("half_life", "1", "day", 24.0),
        ("half_life", "2.5", "h", 2.5),
        ("permeability", "12", "10^-6 cm/s", 1.2e-05),  # 12 × 1e-6
        ("permeability", "12", "1e-6 cm/s", 1.2e-05),
        ("permeability", "12", "x10^-6 cm/s", 1.2e-05),
        ("permeability", "150", "nm/s", 1.5e-05),  # 150 × 1e-7 cm
        ("permeability", "3.5e-6", "cm/s", 3.5e-06),
        ("clearance", "3", "L/h/kg", 50.0),  # 3000 mL / 60 min
        ("clearance", "25", "mL/min/kg", 25.0),
        ("volume_of_distribution", "1500", "mL/kg", 1.5),
        ("volume_of_distribution", "2", "L/kg", 2.0),
        ("melting_point", "25", "°C", 298.15),  # 25 + 273.15
        ("melting_point", "25", "degC", 298.15),
        ("melting_point", "-40", "°C", 233.15),  # -40 + 273.15
        ("melting_point", "300", "K", 300.0),
        ("boiling_point", "212", "degF", 373.15),  # (212 - 32) × 5/9 + 273.15
        ("pka", "4.76", "", 4.76),
        ("logd", "-1.5", "-", -1.5),
    ],
)
def test_units_are_converted_to_the_canonical_ones(name: str, value: str, units: str, expected: float) -> None:
    assert only_value(long(["S-7F3K-01", name, value, units])) == (
        Qualifier.EQUAL, expected, KNOWN_PROPERTIES[name].units,
    )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-6, max_value=1000, allow_nan=False))
def test_micromolar_is_a_thousand_nanomolar(micromolar: float) -> None:
    _, value, _ = only_value(long(["S-7F3K-01", "ic50", repr(micromolar), "uM"]))
    assert value == pytest.approx(micromolar * 1000, rel=1e-11)


@pytest.mark.parametrize(
    ("name", "units", "code", "hint"),
    [
        ("ic50", "kg", RowErrorCode.INCOMPATIBLE_UNITS, "cannot be converted to nM"),
        ("ic50", "um", RowErrorCode.INCOMPATIBLE_UNITS, "did you mean uM?"),  # um is a micrometre
        ("ic50", "nm", RowErrorCode.INCOMPATIBLE_UNITS, "did you mean nM?"),
        ("melting_point", "C", RowErrorCode.INCOMPATIBLE_UNITS, "did you mean °C?"),  # C is a coulomb
        ("solubility", "µM", RowErrorCode.INCOMPATIBLE_UNITS, "cannot be converted to mg/mL"),
        ("half_life", "cm/s", RowErrorCode.INCOMPATIBLE_UNITS, "cannot be converted to h"),
        ("pka", "%", RowErrorCode.INCOMPATIBLE_UNITS, "pka is dimensionless"),
        ("ic50", "", RowErrorCode.MISSING_UNITS, "its canonical units are nM"),
        ("bioavailability", " ", RowErrorCode.MISSING_UNITS, "its canonical units are %"),
        ("ic50", "blorps", RowErrorCode.UNKNOWN_UNITS, "unknown units"),
        ("ic50", "nM; drop table", RowErrorCode.UNKNOWN_UNITS, "unknown units"),
        # Never handed to pint, which would compute 9**387420489 exactly (minutes) before failing.
        ("ic50", "M**9**9**9", RowErrorCode.UNKNOWN_UNITS, "unknown units"),
        ("ic50", "x" * 41, RowErrorCode.UNKNOWN_UNITS, "unknown units"),
    ],
)
def test_units_that_cannot_be_used(name: str, units: str, code: RowErrorCode, hint: str) -> None:
    result = long(["S-7F3K-01", name, "10", units])
    assert only_error(result) == (1, "Units", code)
    assert hint in result.errors[0].reason
    assert result.errors[0].property == name


@pytest.mark.parametrize(
    ("name", "value", "units"),
    [
        ("ic50", "2", "mM"),  # 2e6 nM > 1e6
        ("ic50", "-1", "nM"),
        ("bioavailability", "120", "%"),
        ("permeability", "2", "cm/s"),
        ("half_life", "7000", "min"),  # 116.67 h > 100
        ("melting_point", "-300", "°C"),  # -26.85 K < 0
        ("pka", "25", ""),
    ],
)
def test_values_out_of_range_after_conversion(name: str, value: str, units: str) -> None:
    result = long(["S-7F3K-01", name, value, units])
    assert only_error(result) == (1, "Value", RowErrorCode.OUT_OF_RANGE)


def test_the_out_of_range_reason_shows_the_conversion() -> None:
    (error,) = long(["S-7F3K-01", "ic50", "2", "mM"]).errors
    assert error.reason == "2 mM = 2000000 nM is out of range for ic50 (allowed 0–1000000 nM)"


# --- values and qualifiers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "qualifier", "expected"),
    [
        ("5", "", (Qualifier.EQUAL, 5.0)),
        ("5", "=", (Qualifier.EQUAL, 5.0)),
        ("5", "<", (Qualifier.LESS, 5.0)),
        ("5", " > ", (Qualifier.GREATER, 5.0)),
        ("5", "~", (Qualifier.APPROXIMATE, 5.0)),
        ("<5", "", (Qualifier.LESS, 5.0)),
        ("> 5", "", (Qualifier.GREATER, 5.0)),
        ("~5", "", (Qualifier.APPROXIMATE, 5.0)),
        ("=5", "", (Qualifier.EQUAL, 5.0)),
        ("<5", "<", (Qualifier.LESS, 5.0)),
        (" 5e1 ", "", (Qualifier.EQUAL, 50.0)),
    ],
)
def test_qualifiers_in_their_column_or_in_the_cell(
    value: str, qualifier: str, expected: tuple[Qualifier, float]
) -> None:
    assert only_value(long(["S-7F3K-01", "ic50", value, "nM", qualifier]))[:2] == expected


@pytest.mark.parametrize(
    ("value", "qualifier", "column"),
    [
        ("5", "<=", "Qualifier"),
        ("5", "≤", "Qualifier"),
        ("5", "!", "Qualifier"),
        ("<=5", "", "Value"),
        ("≥5", "", "Value"),
        ("<5", ">", "Value"),  # the two disagree
    ],
)
def test_qualifiers_that_cannot_be_used(value: str, qualifier: str, column: str) -> None:
    assert only_error(long(["S-7F3K-01", "ic50", value, "nM", qualifier])) == (1, column, RowErrorCode.BAD_QUALIFIER)


@pytest.mark.parametrize("value", ["abc", "1,5", "ND", "nan", "inf", "-inf", "1e999", "5 nM", "<", "0x10", "1_000"])
def test_values_that_are_not_numbers(value: str) -> None:
    result = long(["S-7F3K-01", "ic50", value, "nM"])
    assert only_error(result) == (1, "Value", RowErrorCode.NOT_A_NUMBER)
    if value == "1,5":
        assert "use '.' as the decimal separator" in result.errors[0].reason


# --- every other row error -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "column", "code"),
    [
        (["", "ic50", "1", "nM"], "Sample", RowErrorCode.MISSING_IDENTIFIER),
        (["S-7F3K-99", "ic50", "1", "nM"], "Sample", RowErrorCode.UNKNOWN_SAMPLE),
        (["S-7F3K-01", "", "1", "nM"], "Property", RowErrorCode.MISSING_PROPERTY),
        (["S-7F3K-01", "ic51", "1", "nM"], "Property", RowErrorCode.UNKNOWN_PROPERTY),
        (["S-7F3K-01", "custom_color", "1", ""], "Property", RowErrorCode.UNKNOWN_PROPERTY),
        (["S-7F3K-01", "ec50", "", "nM"], "Value", RowErrorCode.MISSING_VALUE),
        (["S-7F3K-01", "num_rings", "2.5", ""], "Value", RowErrorCode.NOT_AN_INTEGER),
        (["S-7F3K-01", "ic50", "1", "nM", "", "r" * 65], "Replicate", RowErrorCode.TOO_LONG),
        (["S-7F3K-01", "ic50", "1", "nM", "", "", "n" * 1001], "Notes", RowErrorCode.TOO_LONG),
    ],
)
def test_row_errors_name_the_row_the_column_and_the_reason(row: list[str], column: str, code: RowErrorCode) -> None:
    assert only_error(long(row)) == (1, column, code)


def test_a_property_not_asked_for() -> None:
    result = long(["S-7F3K-01", "logd", "1.2", ""], facts=SubmissionFacts(SAMPLES, frozenset({"ic50"})))
    assert only_error(result) == (1, "Property", RowErrorCode.PROPERTY_NOT_REQUESTED)
    assert result.errors[0].reason == "logd is not asked for by this submission's specifications"
    assert result.qc.per_property["logd"].rejected == 1


def test_a_row_with_the_wrong_number_of_cells() -> None:
    result = validate_results(LONG, [(4, ["S-7F3K-01", "ic50", "1"])], LONG_MAPPING, FACTS)
    assert only_error(result) == (4, "", RowErrorCode.ROW_SHAPE)


def test_an_identifier_two_samples_share_is_ambiguous() -> None:
    twins = SubmissionFacts((Sample("a", "S-7F3K-01", "R-1"), Sample("b", "S-7F3K-02", "R-1")), frozenset({"ic50"}))
    headers = ["Reg", "Property", "Value", "Units"]
    mapping = {"Reg": "registration_number", "Property": "property", "Value": "value", "Units": "units"}
    result = validate_results(headers, numbered([["r-1", "ic50", "1", "nM"]]), mapping, twins)
    assert only_error(result) == (1, "Reg", RowErrorCode.AMBIGUOUS_SAMPLE)


def test_a_replicate_label_used_twice_rejects_every_row_that_uses_it() -> None:
    result = long(
        ["S-7F3K-01", "ic50", "10", "nM", "", "A"],
        ["S-7F3K-01", "ic50", "11", "nM", "", "B"],
        ["S-7F3K-01", "ic50", "12", "nM", "", "A"],
        ["S-7F3K-02", "ic50", "13", "nM", "", "A"],  # another sample: its own replicate A
    )
    assert sorted(m.value for m in result.measurements) == [11.0, 13.0]
    assert [(e.row_number, e.column, e.code) for e in result.errors] == [
        (1, "Replicate", RowErrorCode.DUPLICATE_REPLICATE),
        (3, "Replicate", RowErrorCode.DUPLICATE_REPLICATE),
    ]
    assert "appears in rows 1, 3" in result.errors[0].reason


# --- replicates ------------------------------------------------------------------------------------------


def test_replicates_are_aggregated_with_mean_sd_and_n() -> None:
    values = [12.0, 15.5, 9.25]
    result = long(*[["S-7F3K-01", "ic50", str(v), "nM", "", str(i)] for i, v in enumerate(values, 1)])
    (aggregate,) = result.aggregates
    assert (aggregate.molecule_id, aggregate.property, aggregate.units) == (M1, "ic50", "nM")
    assert aggregate.qualifier is Qualifier.EQUAL and (aggregate.n, aggregate.n_censored) == (3, 0)
    assert aggregate.value == aggregate.mean == pytest.approx(statistics.mean(values), rel=1e-12)
    assert aggregate.sd == pytest.approx(statistics.stdev(values), rel=1e-12)


def test_replicates_in_mixed_units_are_aggregated_in_canonical_units() -> None:
    result = long(["S-7F3K-01", "ic50", "0.5", "uM"], ["S-7F3K-01", "ic50", "700", "nM"])
    (aggregate,) = result.aggregates
    assert aggregate.mean == pytest.approx(statistics.mean([500.0, 700.0]), rel=1e-12)
    assert aggregate.sd == pytest.approx(statistics.stdev([500.0, 700.0]), rel=1e-12)


def test_one_value_has_no_sd_and_approximate_values_say_so() -> None:
    single = long(["S-7F3K-01", "ic50", "10", "nM"]).aggregates[0]
    assert (single.value, single.sd, single.n) == (10.0, None, 1)
    approx = long(["S-7F3K-01", "ic50", "~10", "nM"], ["S-7F3K-01", "ic50", "20", "nM"]).aggregates[0]
    assert (approx.qualifier, approx.value, approx.n) == (Qualifier.APPROXIMATE, 15.0, 2)


@pytest.mark.parametrize(
    ("cells", "qualifier", "value", "n", "n_censored", "mean"),
    [
        (["<10", "<20"], Qualifier.LESS, 20.0, 0, 2, None),  # the bound both satisfy
        ([">1000", ">500"], Qualifier.GREATER, 500.0, 0, 2, None),
        (["8000", ">10000", ">10000"], Qualifier.GREATER, 8000.0, 1, 2, 8000.0),
        (["<1", "0.8"], Qualifier.LESS, 1.0, 1, 1, 0.8),
        (["<1", "3", "5"], Qualifier.LESS, 5.0, 2, 1, 4.0),  # never the mean of numbers and bounds
        (["<10", ">1000"], None, None, 0, 2, None),  # contradictory
        (["<10", ">1000", "50"], None, None, 1, 2, 50.0),
    ],
)
def test_censored_replicates_are_never_averaged(
    cells: list[str], qualifier: Qualifier | None, value: float | None, n: int, n_censored: int, mean: float | None
) -> None:
    result = long(*[["S-7F3K-01", "ic50", cell, "nM"] for cell in cells])
    (aggregate,) = result.aggregates
    assert (aggregate.qualifier, aggregate.value, aggregate.n, aggregate.n_censored) == (
        qualifier,
        value,
        n,
        n_censored,
    )
    assert aggregate.mean == mean
    assert aggregate.conflicting is (qualifier is None)
    assert result.qc.conflicting == (1 if qualifier is None else 0)
    censored = sorted((m.qualifier, m.value) for m in result.measurements if m.qualifier in CENSORED)
    assert len(censored) == n_censored  # each bound is kept as written


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["", "<", ">", "~"]), st.integers(min_value=0, max_value=10**6)),
        min_size=1,
        max_size=8,
    )
)
def test_any_replicates_aggregate_by_the_rule(replicates: list[tuple[str, int]]) -> None:
    (aggregate,) = long(*[["S-7F3K-01", "ic50", f"{q}{v}", "nM"] for q, v in replicates]).aggregates
    numbers = [float(v) for q, v in replicates if q in ("", "~")]
    less = [float(v) for q, v in replicates if q == "<"]
    more = [float(v) for q, v in replicates if q == ">"]
    assert (aggregate.n, aggregate.n_censored) == (len(numbers), len(less) + len(more))
    assert aggregate.mean == (pytest.approx(statistics.mean(numbers), rel=1e-12) if numbers else None)
    assert aggregate.sd == (pytest.approx(statistics.stdev(numbers), rel=1e-12) if len(numbers) > 1 else None)
    if less and more:
        assert (aggregate.qualifier, aggregate.value) == (None, None)
    elif less:
        assert (aggregate.qualifier, aggregate.value) == (Qualifier.LESS, max(less + numbers))
    elif more:
        assert (aggregate.qualifier, aggregate.value) == (Qualifier.GREATER, min(more + numbers))
    else:
        approximate = any(q == "~" for q, _ in replicates)
        assert aggregate.qualifier is (Qualifier.APPROXIMATE if approximate else Qualifier.EQUAL)
        assert aggregate.value == aggregate.mean


def test_aggregates_are_per_molecule_and_property() -> None:
    result = long(
        ["S-7F3K-01", "ic50", "10", "nM"],
        ["S-7F3K-02", "ic50", "20", "nM"],
        ["S-7F3K-01", "pka", "4", ""],
        ["S-7F3K-01", "ic50", "30", "nM"],
    )
    assert [(a.molecule_id, a.property, a.value, a.n) for a in result.aggregates] == [
        (M1, "ic50", 20.0, 2),
        (M1, "pka", 4.0, 1),
        (M2, "ic50", 20.0, 1),
    ]


# --- the hash --------------------------------------------------------------------------------------------

ROWS = [
    ["S-7F3K-01", "ic50", "0.5", "uM", "", "1", "plate 1"],
    ["S-7F3K-01", "ic50", "<1", "uM", "", "2", ""],
    ["S-7F3K-02", "half_life", "90", "min", "", "", "note with  two spaces"],
    ["S-7F3K-02", "pka", "4.2", "", "~", "", ""],
    ["S-7F3K-03", "ic50", "12", "kg", "", "", ""],  # rejected: not part of the content
]


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False), st.lists(st.sampled_from(["", " ", "\t", "  "]), min_size=14, max_size=14))
def test_the_hash_ignores_row_order_and_whitespace(rng: random.Random, pads: list[str]) -> None:
    reference = long(*[list(row) for row in ROWS])
    shuffled = [list(row) for row in ROWS]
    rng.shuffle(shuffled)
    padded = [
        [pads[i % 14] + cell + pads[(i + j) % 14] for j, cell in enumerate(row)] for i, row in enumerate(shuffled)
    ]
    again = long(*padded)
    assert again.sha256 == reference.sha256
    assert [m.canonical() for m in again.measurements] == [m.canonical() for m in reference.measurements]
    assert again.aggregates == reference.aggregates  # means are summed in a fixed order: equal, not close


def test_the_hash_is_about_content_not_how_it_was_written() -> None:
    reference = long(*[list(row) for row in ROWS]).sha256
    assert len(reference) == 64
    rewritten = [list(row) for row in ROWS]
    rewritten[0][2:4] = ["500", "nM"]  # the same value in other units
    rewritten[3][2:5] = ["~4.2", "-", ""]  # the qualifier in the cell
    rewritten[2][6] = "note with two spaces"
    assert long(*rewritten).sha256 == reference
    assert long(*ROWS[:4]).sha256 == reference  # without the rejected row
    changed = [list(row) for row in ROWS]
    changed[0][2] = "0.6"
    assert long(*changed).sha256 != reference
    relabelled = [list(row) for row in ROWS]
    relabelled[1][5] = "3"
    assert long(*relabelled).sha256 != reference
    censored = [list(row) for row in ROWS]
    censored[1][2] = ">1"
    assert long(*censored).sha256 != reference


def test_the_hash_does_not_depend_on_the_identifier_kind_or_the_format() -> None:
    by_code = long(["S-7F3K-01", "ic50", "3", "uM"], ["S-7F3K-02", "pka", "4", ""])
    headers = ["Key", "IC50 (nM)", "pKa"]
    wide = validate_results(
        headers,
        numbered([[INCHI_1, "3000", ""], [INCHI_2, "", "4"]]),
        {"Key": "inchi_key", "IC50 (nM)": "ic50", "pKa": "pka"},
        FACTS,
    )
    assert not wide.errors and wide.sha256 == by_code.sha256


# --- QC and chunks ---------------------------------------------------------------------------------------


def test_the_qc_summary() -> None:
    facts = SubmissionFacts(SAMPLES, frozenset({"ic50", "pka"}))
    result = long(
        ["S-7F3K-01", "ic50", "10", "nM"],
        ["S-7F3K-01", "ic50", "12", "nM"],
        ["S-7F3K-02", "ic50", "12", "kg"],
        ["S-7F3K-02", "pka", "4.1", ""],
        ["S-7F3K-09", "pka", "4.1", ""],
        ["S-7F3K-01", "logd", "1", ""],
        facts=facts,
    )
    qc = result.qc
    assert (qc.rows, qc.rows_rejected, qc.values_accepted, qc.errors) == (6, 3, 3, 3)
    assert {name: (p.accepted, p.rejected, p.samples) for name, p in qc.per_property.items()} == {
        "ic50": (2, 1, 1),
        "pka": (1, 0, 1),  # the unknown sample's row is the row's error, not the property's
        "logd": (0, 1, 0),
    }
    assert qc.missing == (("S-7F3K-01", "pka"), ("S-7F3K-02", "ic50"), ("S-7F3K-03", "ic50"), ("S-7F3K-03", "pka"))
    assert not qc.clean


def test_a_complete_clean_upload_is_clean() -> None:
    facts = SubmissionFacts(SAMPLES[:2], frozenset({"ic50"}))
    result = long(["S-7F3K-01", "ic50", "10", "nM"], ["S-7F3K-02", "ic50", "<3", "uM"], facts=facts)
    assert result.qc.clean and result.qc.missing == () and result.qc.values_accepted == 2


def test_chunks_read_apart_give_the_same_result_as_the_whole_file() -> None:
    plan = plan_columns(LONG, LONG_MAPPING)
    rows = list(numbered(ROWS + [["S-7F3K-01", "ic50", "0.7", "uM", "", "1", ""]]))  # a duplicate replicate
    whole = build_result_set(plan, [read_rows(plan, rows, FACTS)], FACTS)
    chunked = build_result_set(plan, [read_rows(plan, rows[:3], FACTS), read_rows(plan, rows[3:], FACTS)], FACTS)
    assert chunked == whole
    assert {e.code for e in whole.errors} == {RowErrorCode.INCOMPATIBLE_UNITS, RowErrorCode.DUPLICATE_REPLICATE}
