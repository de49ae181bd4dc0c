"""The engine client's circuit breaker, driven by a fake clock."""

from __future__ import annotations

import pytest

from services.prediction.domain.breaker import CircuitBreaker, CircuitOpen, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(threshold=5, reset_after=60, clock=Clock())
    for _ in range(4):
        breaker.allow()
        breaker.failure()
    breaker.allow()
    breaker.success()  # a success resets the count
    for _ in range(4):
        breaker.failure()
    assert breaker.state is State.CLOSED
    breaker.failure()
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpen) as refused:
        breaker.allow()
    assert refused.value.retry_after == 60


def test_probes_after_reset_and_closes_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, reset_after=60, clock=clock)
    breaker.failure()
    clock.now += 59.5
    with pytest.raises(CircuitOpen) as refused:
        breaker.allow()
    assert refused.value.retry_after == pytest.approx(0.5)
    clock.now += 0.5
    breaker.allow()  # the probe
    assert breaker.state is State.HALF_OPEN
    with pytest.raises(CircuitOpen):
        breaker.allow()  # only one probe at a time
    breaker.success()
    assert breaker.state is State.CLOSED and breaker.retry_after() == 0
    breaker.allow()


def test_failed_probe_opens_again_for_a_full_period() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=2, reset_after=10, clock=clock)
    breaker.failure()
    breaker.failure()
    clock.now += 10
    breaker.allow()
    breaker.failure()
    assert breaker.state is State.OPEN and breaker.retry_after() == 10
    clock.now += 10
    breaker.allow()
    assert breaker.state is State.HALF_OPEN


def test_a_lost_probe_is_replaced_after_the_reset_period() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, reset_after=5, clock=clock)
    breaker.failure()
    clock.now += 5
    breaker.allow()  # this probe's caller never reports back
    clock.now += 4
    with pytest.raises(CircuitOpen):
        breaker.allow()
    clock.now += 1
    breaker.allow()


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold=0)
