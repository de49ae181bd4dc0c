"""services/runtime/feeds.py: a process's watchers by key (the notification service's live streams)."""

from __future__ import annotations

from services.runtime.feeds import Feed


async def test_the_feed_hands_each_id_to_the_watchers_of_its_key_only() -> None:
    feed = Feed()
    with feed.watch("u-1") as first, feed.watch("u-1") as second, feed.watch("u-2") as other:
        feed.announce("u-1", "n-1")
        feed.announce("u-3", "n-9")  # nobody watches: dropped
        assert [first.get_nowait(), second.get_nowait()] == ["n-1", "n-1"]
        assert other.empty()
        assert feed.watchers("u-1") == 2
    assert feed.watchers("u-1") == feed.watchers("u-2") == 0


async def test_a_watcher_that_falls_behind_is_told_once_and_gets_nothing_more() -> None:
    feed = Feed(backlog=2)
    with feed.watch("u-1") as notices:
        for n in range(5):
            feed.announce("u-1", f"n-{n}")
        assert [notices.get_nowait() for _ in range(notices.qsize())] == ["n-0", "n-1", None]
