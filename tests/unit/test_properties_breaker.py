"""The engine circuit breaker (services/prediction/domain/breaker.py) as a state machine, checked by hypothesis
against a plain model of DOMAIN.md's rule: open after 5 consecutive failures, one probe after 60 s."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from services.prediction.domain.breaker import CircuitBreaker, CircuitOpen, State

THRESHOLD, RESET_AFTER = 5, 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class BreakerMachine(RuleBasedStateMachine):
    """The model: `open_until` (None while closed), consecutive `failures`, the probe's start time (or None).

    Calls are made by callers that each ask `allow()` and later report; `outstanding` counts the calls let
    through and not yet reported (a probe whose caller was cancelled never reports)."""

    @initialize()
    def start(self) -> None:
        self.clock = Clock()
        self.breaker = CircuitBreaker(threshold=THRESHOLD, reset_after=RESET_AFTER, clock=self.clock)
        self.failures = 0
        self.opened_at: float | None = None  # set while open or half-open
        self.probe_at: float | None = None  # the probe let through in half-open
        self.outstanding = 0
        self.opened = 0

    def _half_open(self) -> bool:
        return self.opened_at is not None and self.clock.now - self.opened_at >= RESET_AFTER

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 29.5, 59.0, 59.999, 60.0, 61.0, 120.0]))
    def wait(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(callers=st.integers(min_value=1, max_value=3))
    def ask(self, callers: int) -> None:
        for _ in range(callers):  # concurrent callers: several calls may be out when it opens
            self._ask()

    def _ask(self) -> None:
        now = self.clock.now
        if self.opened_at is None:
            allowed = True
        elif now - self.opened_at < RESET_AFTER:
            allowed = False
        else:  # a probe may go: none is out, or the one out has not reported for reset_after
            allowed = self.probe_at is None or now - self.probe_at >= RESET_AFTER
        try:
            self.breaker.allow()
        except CircuitOpen as refused:
            assert not allowed, "the breaker refused a call the rule lets through"
            assert 0 < refused.retry_after <= RESET_AFTER
            return
        assert allowed, "the breaker let through a call the rule refuses"
        if self.opened_at is not None:
            self.probe_at = now
        self.outstanding += 1

    @precondition(lambda self: self.outstanding > 0)
    @rule()
    def succeed(self) -> None:
        self.outstanding -= 1
        self.breaker.success()
        self.failures, self.opened_at, self.probe_at = 0, None, None

    @precondition(lambda self: self.outstanding > 0)
    @rule()
    def fail(self) -> None:
        self.outstanding -= 1
        self.breaker.failure()
        if self.probe_at is not None:  # half-open with a probe out: it (or so it must be taken) failed
            self._open()
        elif self.opened_at is None:
            self.failures += 1
            if self.failures >= THRESHOLD:
                self._open()
        # else: open, a late report of a call let through before it opened: it stays open as it was

    @precondition(lambda self: self.outstanding > 0)
    @rule()
    def abandon(self) -> None:
        """A caller cancelled: its call never reports back."""
        self.outstanding -= 1

    def _open(self) -> None:
        self.failures, self.opened_at, self.probe_at = 0, self.clock.now, None
        self.opened += 1

    @invariant()
    def agrees_with_the_model(self) -> None:
        if not hasattr(self, "breaker"):
            return
        expected = State.CLOSED if self.opened_at is None else State.OPEN
        if self.breaker.state is State.HALF_OPEN:
            assert self.opened_at is not None and self._half_open()
        else:
            assert self.breaker.state is expected
        assert self.breaker.opened == self.opened
        if self.opened_at is None:
            assert self.breaker.failures == self.failures < THRESHOLD
            assert self.breaker.retry_after() == 0
        else:
            assert 0 <= self.breaker.retry_after() <= RESET_AFTER


BreakerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_the_breaker_follows_its_rule = BreakerMachine.TestCase


def test_late_failures_of_calls_let_through_before_it_opened_do_not_open_it_again() -> None:
    """The machine's first find: ten concurrent calls fail; the breaker opened once, not twice."""
    clock = Clock()
    breaker = CircuitBreaker(threshold=THRESHOLD, reset_after=RESET_AFTER, clock=clock)
    for _ in range(2 * THRESHOLD):
        breaker.allow()
    for _ in range(THRESHOLD):
        breaker.failure()
    clock.now += 30
    for _ in range(THRESHOLD):
        breaker.failure()  # the other five report late
    assert breaker.state is State.OPEN and breaker.opened == 1
    assert breaker.retry_after() == RESET_AFTER - 30
