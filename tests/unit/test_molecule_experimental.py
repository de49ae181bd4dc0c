"""How measured values are stored (censored ones as text) and which accepted result wins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.molecule.domain.experimental import StoredCell, replaces, stored_cell

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_measured_and_approximate_values_are_numbers() -> None:
    assert stored_cell(12.5, "=") == StoredCell(12.5, None)
    assert stored_cell(12.5, "~") == StoredCell(12.5, None)
    assert stored_cell(12.5, "") == StoredCell(12.5, None)  # no qualifier: measured


def test_censored_values_are_never_plain_numbers() -> None:
    assert stored_cell(10.0, "<") == StoredCell(None, "<10")
    assert stored_cell(0.25, ">") == StoredCell(None, ">0.25")


def test_unusable_values_are_refused() -> None:
    assert stored_cell(1.0, "<=") is None
    assert stored_cell(float("nan"), "=") is None
    assert stored_cell(float("inf"), "<") is None


def test_an_older_acceptance_never_replaces_a_newer_one() -> None:
    assert replaces(None, T0)
    assert replaces(T0, T0 + timedelta(hours=1))
    assert replaces(T0, T0)
    assert not replaces(T0 + timedelta(hours=1), T0)
