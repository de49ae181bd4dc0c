"""bus.retry: jittered retries (stamina, real sleeps of a few ms) that a stop request cuts short."""

from __future__ import annotations

import asyncio

import pytest

from bus.retry import retry_until_stopped


async def test_retries_until_the_attempt_succeeds_and_logs_each_failure() -> None:
    calls: list[int] = []
    failures: list[str] = []

    async def attempt() -> str:
        calls.append(len(calls))
        if len(calls) < 3:
            raise ConnectionError("NATS away")
        return "published"

    def failed(error: Exception) -> bool:
        failures.append(str(error))
        return True

    result = await retry_until_stopped(attempt, asyncio.Event(), on=failed, wait_initial=0.001, wait_max=0.01)
    assert result == "published" and len(calls) == 3 and failures == ["NATS away", "NATS away"]


async def test_an_error_not_retried_is_raised() -> None:
    async def attempt() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await retry_until_stopped(attempt, asyncio.Event(), on=lambda e: isinstance(e, OSError),
                                  wait_initial=0.001, wait_max=0.01)


async def test_stop_cuts_the_pause_short_and_returns_none() -> None:
    stopping = asyncio.Event()
    attempts = 0

    async def attempt() -> None:
        nonlocal attempts
        attempts += 1
        stopping.set()  # stop arrives while this attempt fails; the next pause would be an hour
        raise ConnectionError("down")

    result = await retry_until_stopped(attempt, stopping, on=lambda e: True, wait_initial=3600, wait_max=3600)
    assert result is None and attempts == 1


async def test_cancellation_is_never_retried() -> None:
    started = asyncio.Event()

    async def attempt() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(
        retry_until_stopped(attempt, asyncio.Event(), on=lambda e: True, wait_initial=0.001, wait_max=0.01)
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
