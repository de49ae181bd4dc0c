"""Message threads, the pure part: who sees a thread (the fan-out to watchers: tests/unit/test_runtime_feeds.py)."""

from __future__ import annotations

import pytest

from services.cro.domain.vocabulary import SubmissionStatus as S
from tests.unit.test_cro_submissions import CRO_ORG, OTHER_ORG, person, submission_in


@pytest.mark.parametrize("status", list(S))
def test_the_thread_is_seen_by_both_parties_and_by_the_cro_only_past_draft(status: S) -> None:
    submission = submission_in(status)
    assert submission.visible_to(person("pharma_scientist"))
    assert submission.visible_to(person("pharma_admin"))
    assert submission.visible_to(person("system_admin"))
    assert submission.visible_to(person("cro_technician", CRO_ORG)) is (status is not S.DRAFT)
    assert not submission.visible_to(person("pharma_scientist", OTHER_ORG))
    assert not submission.visible_to(person("cro_admin", OTHER_ORG))
