"""Transitions, rejections and fallbacks reach the OpenTelemetry counters (faked here: the global meter provider can
be set once per process) and the event hook."""

from __future__ import annotations

import pytest

from distkit.errors import BreakerOpenError, BulkheadFullError
from distkit.resilience import Bulkhead, CircuitBreaker, degrade
from distkit.resilience import metrics as rmetrics


class FakeCounter:
    def __init__(self) -> None:
        self.adds: list[dict[str, str]] = []

    def add(self, n: int, attrs: dict[str, str]) -> None:
        assert n == 1
        self.adds.append(dict(attrs))


def test_counters(monkeypatch, fake_clock):
    assert rmetrics._get("transitions") is not None  # opentelemetry-api is installed: real (no-op) counters
    fakes = {n: FakeCounter() for n in ("transitions", "rejections", "fallbacks")}
    monkeypatch.setattr(rmetrics, "_counters", fakes)
    b = CircuitBreaker("m-dep", minimum_calls=1, clock=fake_clock)
    with pytest.raises(ZeroDivisionError):
        b.call(lambda: 1 / 0)
    with pytest.raises(BreakerOpenError):
        b.call(lambda: 1)
    fake_clock.advance(5_000)
    b.call(lambda: 1)
    b.call(lambda: 1)
    b.call(lambda: 1)  # three probes passed: CLOSED
    bh = Bulkhead("m-bh", max_concurrent=1)
    with bh, pytest.raises(BulkheadFullError):
        bh.acquire()

    @degrade(fallback=lambda: "fb")
    def f() -> str:
        raise BreakerOpenError("x", "OPEN", 1.0)

    assert f() == "fb"
    assert fakes["transitions"].adds == [
        {"breaker": "m-dep", "from": "CLOSED", "to": "OPEN"},
        {"breaker": "m-dep", "from": "OPEN", "to": "HALF_OPEN"},
        {"breaker": "m-dep", "from": "HALF_OPEN", "to": "CLOSED"},
    ]
    assert fakes["rejections"].adds == [
        {"name": "m-dep", "kind": "breaker", "state": "OPEN"},
        {"name": "m-bh", "kind": "bulkhead", "state": "FULL"},
    ]
    assert fakes["fallbacks"].adds == [{"function": "test_counters.<locals>.f", "error": "BreakerOpenError"}]
