"""Message threads, the pure parts: who sees a thread, and the in-process fan-out to watchers."""

from __future__ import annotations

import pytest

from services.cro.domain.vocabulary import SubmissionStatus as S
from services.cro.service.messages import MessageFeed
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


async def test_the_feed_hands_each_posted_id_to_the_watchers_of_that_thread_only() -> None:
    feed = MessageFeed()
    with feed.watch("s-1") as first, feed.watch("s-1") as second, feed.watch("s-2") as other:
        feed.announce("s-1", "m-1")
        feed.announce("s-3", "m-9")  # nobody watches: dropped
        assert [first.get_nowait(), second.get_nowait()] == ["m-1", "m-1"]
        assert other.empty()
        assert feed.watchers("s-1") == 2
    assert feed.watchers("s-1") == feed.watchers("s-2") == 0


async def test_a_watcher_that_falls_behind_is_told_once_and_gets_nothing_more() -> None:
    feed = MessageFeed(backlog=2)
    with feed.watch("s-1") as notices:
        for n in range(5):
            feed.announce("s-1", f"m-{n}")
        assert [notices.get_nowait() for _ in range(notices.qsize())] == ["m-0", "m-1", None]
