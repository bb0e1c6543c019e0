"""The Lua scripts and MemoryBreakerStore are one algorithm: Hypothesis drives both with the same operations and
times (client-supplied clock) and compares every answer. Plus: a local breaker that trips before its first sync."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from distkit.resilience import CircuitBreaker, MemoryBreakerStore, RedisBreakerStore, State
from distkit.resilience.breaker import BreakerConfig
from tests.fakeclock import FakeClock

CFG = BreakerConfig(
    failure_rate=0.5, slow_call_rate=0.75, slow_call_ms=50, window_ms=1000, buckets=4, minimum_calls=3,
    open_ms=300, half_open_calls=2, half_open_max_ms=800,
)


def test_lua_matches_memory_store(redis_client, namespace):
    prefix = namespace

    @settings(max_examples=40, stateful_step_count=30, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    class Parity(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.clock = FakeClock()
            self.name = uuid.uuid4().hex[:8]
            self.mem = MemoryBreakerStore(clock=self.clock, flush_s=None)
            self.red = RedisBreakerStore(redis_client, prefix=prefix, flush_s=None, clock=self.clock)

        def both(self, op: str, *args: object) -> None:
            a = getattr(self.mem, op)(self.name, CFG, *args)
            b = getattr(self.red, op)(self.name, CFG, *args)
            assert a == b, (op, args)

        @rule(ms=st.integers(0, 600))
        def advance(self, ms: int) -> None:
            self.clock.advance(ms)

        @rule(calls=st.integers(0, 4), data=st.data(), trip=st.sampled_from([None, -1, 0, 1, 2, 3, 4]))
        def sync(self, calls: int, data: st.DataObject, trip: int | None) -> None:
            failed = data.draw(st.integers(0, calls))
            slow = data.draw(st.integers(0, calls))
            self.both("flush", (calls, failed, slow), trip)

        @rule()
        def acquire(self) -> None:
            self.both("acquire_probe")

        @rule(epoch=st.integers(0, 6), failed=st.booleans(), slow=st.booleans())
        def record(self, epoch: int, failed: bool, slow: bool) -> None:
            self.both("record_probe", epoch, failed, slow)

        @rule(epoch=st.integers(0, 6))
        def release(self, epoch: int) -> None:
            self.both("release_probe", epoch)

        @rule(op=st.sampled_from(["force_open", "reset"]))
        def control(self, op: str) -> None:
            self.both("control", op)

        def teardown(self) -> None:
            self.red.close()

    Parity.TestCase().runTest()


def test_local_trip_before_the_first_sync_trips_the_store(fake_clock):
    store = MemoryBreakerStore(clock=fake_clock, flush_s=None)
    a = CircuitBreaker("early", minimum_calls=2, store=store, clock=fake_clock)
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            a.call(lambda: 1 / 0)
    assert a.state is State.OPEN
    a.flush()  # never synced before: the trip is still shared
    assert a.state is State.OPEN
    b = CircuitBreaker("early", minimum_calls=2, store=store, clock=fake_clock)
    b.flush()
    assert b.state is State.OPEN


def test_import_and_local_use_without_redis_installed():
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import distkit.resilience as r\n"
        "b = r.CircuitBreaker('x', minimum_calls=1)\n"
        "assert b.call(lambda: 5) == 5\n"
        "assert r.Bulkhead('y')(lambda: 6)() == 6\n"
        "assert 'redis' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n"
        "    r.RedisBreakerStore(object())\n"
        "except ImportError:\n"
        "    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
