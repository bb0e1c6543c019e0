"""Transitions, rejections and fallbacks reach the OpenTelemetry counters (an SDK provider handed to distkit with
``use_meter_provider``: the global meter provider can be set once per process) and the event hook."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from distkit._metrics import use_meter_provider
from distkit.errors import BreakerOpenError, BulkheadFullError
from distkit.resilience import Bulkhead, CircuitBreaker, degrade


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    r = InMemoryMetricReader()
    with use_meter_provider(MeterProvider(metric_readers=[r])):
        yield r


def counted(reader: InMemoryMetricReader, short: str) -> list[dict[str, str]]:
    """One attribute dict per unit counted by ``distkit.resilience.<short>``, sorted."""
    out: list[dict[str, str]] = []
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == f"distkit.resilience.{short}":
                    for p in m.data.data_points:
                        out.extend([dict(p.attributes)] * p.value)
    return sorted(out, key=lambda a: sorted(a.items()))


def by_attrs(*attrs: dict[str, str]) -> list[dict[str, str]]:
    return sorted(attrs, key=lambda a: sorted(a.items()))


def test_counters(reader, fake_clock):
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
    assert counted(reader, "transitions") == by_attrs(
        {"breaker": "m-dep", "from": "CLOSED", "to": "OPEN"},
        {"breaker": "m-dep", "from": "OPEN", "to": "HALF_OPEN"},
        {"breaker": "m-dep", "from": "HALF_OPEN", "to": "CLOSED"},
    )
    assert counted(reader, "rejections") == by_attrs(
        {"name": "m-dep", "kind": "breaker", "state": "OPEN"},
        {"name": "m-bh", "kind": "bulkhead", "state": "FULL"},
    )
    assert counted(reader, "fallbacks") == [{"function": "test_counters.<locals>.f", "error": "BreakerOpenError"}]
