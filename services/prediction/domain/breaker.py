"""The engine client's circuit breaker: a pure state machine with an injectable clock.

closed    → every call goes through; `threshold` consecutive failures open it.
open      → calls are refused (CircuitOpen) until `reset_after` seconds have passed since it opened;
            late failures of calls let through before it opened change nothing.
half-open → one probe call goes through: success closes the breaker, failure opens it again for
            another `reset_after` seconds. Other calls are refused while the probe is out (a probe
            that never reports back is replaced after `reset_after`).

No I/O and no asyncio: the caller asks `allow()` before a call and reports `success()` / `failure()`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class State(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(Exception):
    """The breaker refused the call; `retry_after` seconds until it will let a probe through."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"the AI engine circuit is open; next probe in {retry_after:.1f} s")
        self.retry_after = retry_after


@dataclass
class CircuitBreaker:
    threshold: int = 5
    reset_after: float = 60.0
    clock: Callable[[], float] = time.monotonic
    state: State = field(default=State.CLOSED, init=False)
    failures: int = field(default=0, init=False)  # consecutive, while closed
    opened_at: float = field(default=0.0, init=False)
    _probing: bool = field(default=False, init=False)
    _probe_at: float = field(default=0.0, init=False)
    opened: int = field(default=0, init=False)  # times it opened (for operators and tests)

    def __post_init__(self) -> None:
        if self.threshold < 1 or self.reset_after < 0:
            raise ValueError("threshold must be at least 1 and reset_after not negative")

    def allow(self) -> None:
        """Raises CircuitOpen unless a call may go out now (in half-open: the one probe)."""
        if self.state is State.OPEN:
            waited = self.clock() - self.opened_at
            if waited < self.reset_after:
                raise CircuitOpen(self.reset_after - waited)
            self.state, self._probing = State.HALF_OPEN, False
        if self.state is State.HALF_OPEN:
            # A probe that never reported back (its caller was cancelled) is replaced after reset_after.
            if self._probing and self.clock() - self._probe_at < self.reset_after:
                raise CircuitOpen(self.retry_after())
            self._probing, self._probe_at = True, self.clock()

    def retry_after(self) -> float:
        """Seconds until a call may be allowed (0 when closed or ready to probe)."""
        if self.state is State.OPEN:
            return max(0.0, self.reset_after - (self.clock() - self.opened_at))
        if self.state is State.HALF_OPEN and self._probing:
            return max(0.0, self.reset_after - (self.clock() - self._probe_at))
        return 0.0

    def success(self) -> None:
        self.state, self.failures, self._probing = State.CLOSED, 0, False

    def failure(self) -> None:
        if self.state is State.OPEN:
            return  # a late report of a call let through before it opened: no reason to open it again
        if self.state is State.HALF_OPEN:
            self._open()
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self._open()

    def _open(self) -> None:
        self.state, self.opened_at, self._probing, self.failures = State.OPEN, self.clock(), False, 0
        self.opened += 1
