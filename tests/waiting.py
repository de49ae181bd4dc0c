"""Waiting for what happens in the background (a consumer, an index, a restarted process): poll until a
condition holds. The bound is for a hang, not a performance figure: every wait ends as soon as it holds."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

WAIT_S = 120.0


def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT_S, every: float = 0.2) -> Any:
    """Polls `check` until it answers something truthy; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(every)


async def eventually_async(
    check: Callable[[], Any | Awaitable[Any]], what: str = "the condition", timeout: float = 60.0,
    every: float = 0.05,
) -> Any:
    """Polls `check` (sync or async) until it answers something truthy; returns that."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        assert loop.time() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(every)
