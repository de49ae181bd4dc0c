"""The molecule side's rule for statuses a submission sets (services.molecule.domain.molecules.follows_submission)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.molecule.domain.molecules import follows_submission

T = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("current", "set_at", "target", "at", "expected"),
    [
        ("AVAILABLE", None, "PENDING", T, True),  # never set by a submission before
        ("PENDING", T, "TESTING", T + timedelta(days=1), True),
        ("TESTING", T, "PENDING", T - timedelta(seconds=1), False),  # an older event delivered late
        ("PENDING", T, "PENDING", T, True),  # the same instant: harmless
        ("RESULTS", T, "PENDING", T + timedelta(days=9), True),  # the next submission
        ("ARCHIVED", None, "AVAILABLE", T, False),  # a release never un-archives
        ("ARCHIVED", None, "PENDING", T, True),
        ("AVAILABLE", None, "ARCHIVED", T, False),  # not a submission's status
        ("AVAILABLE", None, "SHIPPED", T, False),
    ],
)
def test_follows_submission(current: str, set_at: datetime | None, target: str, at: datetime, expected: bool) -> None:
    assert follows_submission(current, set_at, target, at) is expected
