"""Supervised background work: restarted with jittered backoff (stamina, via bus.retry), never dying silently."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bus.retry import retry_until_stopped

log = logging.getLogger("molbridge.retry")

# Background work restarts after 0.5 s, 1 s, 2 s … up to 30 s (plus up to 1 s of jitter), forever.
RESTART_INITIAL_S = 0.5
RESTART_MAX_S = 30.0


async def supervise(job: Callable[[], Awaitable[None]], *, name: str | None = None) -> None:
    """Run `job` until it returns; when it raises, log and restart it after a jittered backoff.
    Cancellation stops it at once."""
    label = name or str(getattr(job, "__qualname__", job))

    def restart(error: Exception) -> bool:
        log.error("background job %s failed; restarting", label, exc_info=error)
        return True

    await retry_until_stopped(
        job, asyncio.Event(), on=restart, wait_initial=RESTART_INITIAL_S, wait_max=RESTART_MAX_S
    )
