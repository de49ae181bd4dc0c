import pytest

from services.molecule.domain import properties
from services.molecule.domain.properties import PropertyValueError, ValueType, check_value, definition, parse_value
from services.runtime import properties as runtime_properties

DOMAIN_RANGES = {  # DOMAIN.md "Known properties": name → (units, low, high)
    "molecular_weight": ("g/mol", 0, 2000),
    "exact_mass": ("g/mol", 0, 2000),
    "logp": ("", -10, 10),
    "tpsa": ("Å²", 0, 500),
    "num_atoms": ("", 1, 1000),
    "num_heavy_atoms": ("", 1, 500),
    "num_rings": ("", 0, 50),
    "num_rotatable_bonds": ("", 0, 100),
    "num_h_donors": ("", 0, 50),
    "num_h_acceptors": ("", 0, 50),
    "solubility": ("mg/mL", 0, 1000),
    "melting_point": ("K", 0, 1000),
    "boiling_point": ("K", 0, 1500),
    "pka": ("", -10, 20),
    "pkb": ("", -10, 20),
    "ic50": ("nM", 0, 1e6),
    "ec50": ("nM", 0, 1e6),
    "binding_affinity": ("nM", 0, 1e6),
    "permeability": ("cm/s", 0, 1),
    "clearance": ("mL/min/kg", 0, 1000),
    "half_life": ("h", 0, 100),
    "bioavailability": ("%", 0, 100),
    "volume_of_distribution": ("L/kg", 0, 100),
}


def test_catalogue_matches_domain_table() -> None:
    for name, (units, low, high) in DOMAIN_RANGES.items():
        prop = definition(name)
        assert prop is not None, name
        assert (prop.units, prop.minimum, prop.maximum) == (units, low, high), name
    ours = {"lipinski_violations", "logd", "desirability_score"}  # beyond DOMAIN.md's table
    assert set(properties.KNOWN_PROPERTIES) == set(DOMAIN_RANGES) | ours


def test_the_catalogue_is_the_shared_one() -> None:
    assert properties.KNOWN_PROPERTIES is runtime_properties.KNOWN_PROPERTIES
    assert properties.PropertyDefinition is runtime_properties.PropertyDefinition


def test_calculated_and_predictable_sets_match_domain() -> None:
    assert set(properties.CALCULATED_PROPERTIES) == {
        "molecular_weight", "exact_mass", "logp", "tpsa", "num_atoms", "num_heavy_atoms", "num_rings",
        "num_rotatable_bonds", "num_h_donors", "num_h_acceptors", "lipinski_violations",
    }  # fmt: skip
    assert set(properties.PREDICTABLE_PROPERTIES) == {
        "logp", "logd", "solubility", "permeability", "clearance", "half_life", "bioavailability",
        "ic50", "ec50", "binding_affinity", "pka", "pkb",
    }  # fmt: skip
    lipinski = definition("lipinski_violations")
    assert lipinski is not None
    assert (lipinski.value_type, lipinski.minimum, lipinski.maximum) == (ValueType.INTEGER, 0, 4)


def test_counts_are_integers_and_measurements_numeric() -> None:
    for name, prop in properties.KNOWN_PROPERTIES.items():
        expected = (
            ValueType.INTEGER
            if name.startswith("num_") or name == "lipinski_violations"
            else ValueType.NUMERIC
        )
        assert prop.value_type is expected, name


@pytest.mark.parametrize(
    ("name", "raw", "value"),
    [
        ("ic50", "12.5", 12.5),
        ("ic50", "  12.5\t", 12.5),
        ("ic50", "1e3", 1000.0),
        ("ic50", "1.5E+2", 150.0),
        ("ic50", ".5", 0.5),
        ("ic50", "5.", 5.0),
        ("ic50", "0", 0.0),
        ("ic50", "1e6", 1e6),  # bounds are inclusive
        ("logp", "-10", -10.0),
        ("logp", "+3.2", 3.2),
        ("permeability", "1e-7", 1e-7),
        ("num_rings", "3", 3),
        ("num_rings", "3.0", 3),  # spreadsheets write counts as floats
        ("num_rings", "2e1", 20),
    ],
)
def test_parses_numbers(name: str, raw: str, value: float) -> None:
    parsed = parse_value(name, raw)
    assert parsed.value == value
    assert type(parsed.value) is (int if parsed.value_type is ValueType.INTEGER else float)
    assert parsed.units == DOMAIN_RANGES[name][0]


@pytest.mark.parametrize(
    ("name", "raw", "reason"),
    [
        ("ic50", "abc", "not a number: 'abc'"),
        ("ic50", "2e6", "out of range for ic50: 2e6 nM (allowed 0–1e6)"),
        ("ic50", "2000000", "out of range for ic50: 2e6 nM (allowed 0–1e6)"),
        ("ic50", "-1", "out of range for ic50: -1 nM (allowed 0–1e6)"),
        ("ic50", "1234567", "out of range for ic50: 1.234567e6 nM (allowed 0–1e6)"),
        ("logp", "10.5", "out of range for logp: 10.5 (allowed -10–10)"),
        ("permeability", "2", "out of range for permeability: 2 cm/s (allowed 0–1)"),
        ("num_rings", "3.5", "not an integer: 3.5"),
        ("num_rings", "51", "out of range for num_rings: 51 (allowed 0–50)"),
        ("ic50", "nan", "not a finite number: 'nan'"),
        ("ic50", "-Infinity", "not a finite number: '-Infinity'"),
        ("ic50", "1e999", "not a finite number: '1e999'"),
        ("ic50", "", "empty value for ic50"),
        ("ic50", "   ", "empty value for ic50"),
        ("ic50", "1_000", "not a number: '1_000'"),
        ("ic50", "0x10", "not a number: '0x10'"),
        ("ic50", "<10", "not a number: '<10'"),
        ("ic50", "5 nM", "not a number: '5 nM'"),
    ],
)
def test_rejects_bad_values_with_a_reason(name: str, raw: str, reason: str) -> None:
    with pytest.raises(PropertyValueError) as error:
        parse_value(name, raw)
    assert error.value.reason == reason
    assert str(error.value) == reason


@pytest.mark.parametrize("raw", ["1,5", "1,000", "0,001"])
def test_decimal_comma_is_rejected_as_ambiguous(raw: str) -> None:
    with pytest.raises(PropertyValueError) as error:
        parse_value("ic50", raw)
    assert error.value.reason.startswith(f"not a number: '{raw}'")
    assert "decimal separator" in error.value.reason


def test_huge_cell_is_rejected_quickly_and_quoted_short() -> None:
    with pytest.raises(PropertyValueError) as error:
        parse_value("ic50", "1" * 10_000_000 + "x")
    assert error.value.reason == f"value too long: 10000001 characters (limit {properties.MAX_TEXT_LENGTH})"
    with pytest.raises(PropertyValueError) as error:
        parse_value("ic50", "9" * 500 + "x")  # under the cap: the message still quotes only the start
    assert len(error.value.reason) < 80


@pytest.mark.parametrize(
    ("raw", "value", "value_type"),
    [
        ("42", 42, ValueType.INTEGER),
        ("-3", -3, ValueType.INTEGER),
        ("4.25", 4.25, ValueType.NUMERIC),
        ("1e9", 1e9, ValueType.NUMERIC),  # no range check on custom properties
        ("-5e12", -5e12, ValueType.NUMERIC),
        ("active", "active", ValueType.STRING),
        ("  batch 7 ", "batch 7", ValueType.STRING),
        ("1,5", "1,5", ValueType.STRING),  # not a number, so kept as text rather than guessed
        ("007", "007", ValueType.STRING),  # leading zeros: an identifier, keep every digit
        ("123456789012345678901234567890", "123456789012345678901234567890", ValueType.STRING),
        ("true", "true", ValueType.STRING),
    ],
)
def test_custom_values_keep_numbers_as_numbers_else_text(
    raw: str, value: object, value_type: ValueType
) -> None:
    parsed = parse_value("custom_assay_note", raw)
    assert (parsed.value, parsed.value_type, parsed.units) == (value, value_type, "")


def test_custom_values_still_reject_non_finite_and_oversized() -> None:
    for raw in ("NaN", "inf"):
        with pytest.raises(PropertyValueError, match="not a finite number"):
            parse_value("custom_x", raw)
    with pytest.raises(PropertyValueError, match="value too long"):
        parse_value("custom_x", "x" * (properties.MAX_TEXT_LENGTH + 1))


@pytest.mark.parametrize(
    "name", ["custom_", "custom_Assay", "custom_a-b", "custom_" + "a" * 58, "mw", "IC50", ""]
)
def test_unknown_and_malformed_names(name: str) -> None:
    assert definition(name) is None
    with pytest.raises(PropertyValueError, match="unknown property"):
        parse_value(name, "1")


def test_custom_definition() -> None:
    prop = definition("custom_assay_1")
    assert prop is not None
    assert prop.custom and prop.value_type is None and prop.minimum is None and prop.maximum is None
    assert properties.is_custom_name("custom_" + "a" * 57)


def test_check_value_for_typed_values() -> None:
    assert check_value("num_rings", 3.0).value == 3
    assert check_value("ic50", 5).value == 5.0
    assert check_value("ic50", "5").value == 5.0
    assert check_value("custom_x", 2).value_type is ValueType.INTEGER
    with pytest.raises(PropertyValueError, match="out of range for tpsa: 600 Å²"):
        check_value("tpsa", 600)
    with pytest.raises(PropertyValueError, match="not a finite number"):
        check_value("ic50", float("nan"))
    with pytest.raises(PropertyValueError, match="got a boolean"):
        check_value("ic50", True)
    with pytest.raises(PropertyValueError, match="not an integer"):
        check_value("num_atoms", 2.5)
