"""Registration number rules (domain/registration_numbers.py): format, prefix validation and default,
reading a typed number."""

from __future__ import annotations

import pytest

from services.molecule.domain.registration_numbers import (
    default_prefix,
    format_number,
    normalize_number,
    validate_prefix,
)
from services.runtime.errors import ValidationError


def test_numbers_are_the_prefix_and_six_digits_growing_past_a_million() -> None:
    assert format_number("ACME", 1) == "ACME-000001"
    assert format_number("MOL", 123) == "MOL-000123"
    assert format_number("MOL", 999_999) == "MOL-999999"
    assert format_number("MOL", 1_000_000) == "MOL-1000000"  # a seventh digit rather than a wrap
    with pytest.raises(ValueError):
        format_number("MOL", 0)


@pytest.mark.parametrize(
    ("given", "stored"), [("acme", "ACME"), (" Cro7 ", "CRO7"), ("AB", "AB"), ("A1234567", "A1234567")]
)
def test_a_prefix_is_stored_upper_case(given: str, stored: str) -> None:
    assert validate_prefix(given) == stored


@pytest.mark.parametrize("given", ["", "A", "1ACME", "AC-ME", "ACME PHARMA", "ABCDEFGHI", "ÄCME"])
def test_a_bad_prefix_is_a_validation_error_naming_the_field(given: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_prefix(given)
    assert caught.value.field_violations[0][0] == "prefix"


def test_typed_numbers_are_read_in_any_case_and_other_text_is_no_number() -> None:
    assert normalize_number(" acme-000123 ") == "ACME-000123"
    assert normalize_number("MOL-1000000") == "MOL-1000000"
    assert normalize_number("MOL-123") is None  # fewer than six digits: maybe an alias
    assert normalize_number("aspirin") is None
    assert normalize_number("") is None


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("Acme Pharma", "ACME"),
        ("  bio-gen labs", "BIOGEN"),
        ("Verylongname Inc", "VERYLONG"),  # cut to eight
        ("Org 1a2b3c4d", "ORG"),
        ("3M", "MOL"),  # a prefix starts with a letter
        ("X Labs", "MOL"),  # and has two characters at least
        ("", "MOL"),
        ("— Ωmega", "MEGA"),  # letters outside A–Z are left out
    ],
)
def test_the_default_prefix_is_the_first_word_of_the_name(name: str, prefix: str) -> None:
    assert default_prefix(name) == prefix
