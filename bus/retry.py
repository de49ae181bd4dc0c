"""Retries with jittered exponential backoff (stamina) that a stop request cuts short.

JetStream's own redelivery backoff (nak delays by delivery count) is separate: it lives in
bus.consumer and is not touched here. This is for the bus's own connections: binding a consumer,
fetching, and the relay's publishing while NATS or PostgreSQL is away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import stamina

T = TypeVar("T")


async def retry_until_stopped(
    attempt: Callable[[], Awaitable[T]],
    stopping: asyncio.Event,
    *,
    on: Callable[[Exception], bool],
    wait_initial: float,
    wait_max: float,
    wait_jitter: float = 1.0,
) -> T | None:
    """`await attempt()` until it succeeds; an error for which `on(error)` is true (log there) is retried
    after a jittered backoff, any other is raised. Returns None if `stopping` is set while waiting:
    an attempt in flight is never interrupted, only the pause between attempts."""
    def retry_on(error: BaseException) -> bool:
        # Cancellation (a BaseException) must end the retries, never be retried.
        return isinstance(error, Exception) and on(error)

    retries = stamina.retry_context(
        on=retry_on,
        attempts=None,
        timeout=None,
        wait_initial=wait_initial,
        wait_max=wait_max,
        wait_jitter=min(wait_jitter, wait_max),
    ).__aiter__()
    while not stopping.is_set():
        next_attempt = asyncio.ensure_future(retries.__anext__())  # sleeps the backoff before a retry
        stop = asyncio.ensure_future(stopping.wait())
        done, _ = await asyncio.wait({next_attempt, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if next_attempt not in done:
            next_attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await next_attempt
            return None
        with next_attempt.result():
            return await attempt()
    return None
