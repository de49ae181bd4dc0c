"""Retries with jittered exponential backoff (stamina), so restarts of many processes do not march in step."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import stamina

log = logging.getLogger("molbridge.retry")

# Background work restarts after 0.5 s, 1 s, 2 s … up to 30 s (plus up to 1 s of jitter), forever.
RESTART_INITIAL_S = 0.5
RESTART_MAX_S = 30.0


async def supervise(job: Callable[[], Awaitable[None]], *, name: str | None = None) -> None:
    """Run `job` until it returns; when it raises, log and restart it after a jittered backoff.

    Background work must not die silently; cancellation stops it at once.
    """
    label = name or getattr(job, "__qualname__", repr(job))
    async for attempt in stamina.retry_context(
        on=_log_and_retry(label),
        attempts=None,
        timeout=None,
        wait_initial=RESTART_INITIAL_S,
        wait_max=RESTART_MAX_S,
        wait_jitter=1.0,
    ):
        with attempt:
            await job()


def _log_and_retry(label: str) -> Callable[[Exception], bool]:
    def predicate(error: Exception) -> bool:
        if isinstance(error, asyncio.CancelledError):
            return False
        log.error("background job %s failed; restarting", label, exc_info=error)
        return True

    return predicate
