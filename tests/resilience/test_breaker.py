"""Local circuit breaker: exact transitions on a fake clock, probes, exceptions, async, events, Hypothesis model."""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from distkit.errors import BreakerOpenError, InvalidArgumentError
from distkit.resilience import CircuitBreaker, Event, State
from distkit.resilience.breaker import CALL, BreakerConfig, Machine
from tests.fakeclock import FakeClock


class Boom(Exception):
    pass


class Ignored(Exception):
    pass


def make(clock: FakeClock, events: list[Event] | None = None, **kw: object) -> CircuitBreaker:
    opts: dict[str, object] = {
        "failure_rate": 0.5, "slow_call_rate": 0.5, "slow_call_s": 0.8, "window_s": 10, "minimum_calls": 4, "open_s": 5,
        "half_open_calls": 3,
    }
    opts.update(kw)
    return CircuitBreaker("dep", clock=clock, on_event=events.append if events is not None else None, **opts)  # type: ignore[arg-type]


def run(breaker: CircuitBreaker, clock: FakeClock, outcome: str, took_ms: int = 0) -> str:
    """One call through the decorator: 'ok', 'fail' or 'ignored', taking ``took_ms`` on the fake clock."""

    @breaker
    def call() -> str:
        clock.advance(took_ms)
        if outcome == "fail":
            raise Boom()
        if outcome == "ignored":
            raise Ignored()
        return "ok"

    try:
        return call()
    except Boom:
        return "failed"
    except Ignored:
        return "ignored"
    except BreakerOpenError:
        return "rejected"


def test_failure_rate_trips_exactly_at_minimum_calls(fake_clock):
    events: list[Event] = []
    b = make(fake_clock, events)
    assert [run(b, fake_clock, o) for o in ("fail", "fail", "fail")] == ["failed"] * 3
    assert b.state is State.CLOSED  # 3 calls < minimum_calls=4, even at 100 % failures
    assert run(b, fake_clock, "ok") == "ok"  # 4th call: 3/4 failed >= 0.5 -> OPEN
    assert b.state is State.OPEN
    assert run(b, fake_clock, "ok") == "rejected"
    assert [(e.kind, e.from_state, e.to_state) for e in events] == [
        ("transition", "CLOSED", "OPEN"),
        ("rejected", "", "OPEN"),
    ]
    m = b.metrics()
    assert m.not_permitted_calls == 1 and m.calls == 0  # the window is cleared on the transition


def test_failure_rate_below_threshold_stays_closed(fake_clock):
    b = make(fake_clock, minimum_calls=4, failure_rate=0.5)
    for o in ("ok", "ok", "ok", "fail", "ok", "ok"):  # 1/6 .. never >= 0.5
        run(b, fake_clock, o)
    assert b.state is State.CLOSED
    assert b.metrics().calls == 6 and b.metrics().failed_calls == 1
    run(b, fake_clock, "fail")
    run(b, fake_clock, "fail")
    assert b.state is State.CLOSED  # 3/8 < 0.5
    run(b, fake_clock, "fail")  # 4/9 < 0.5
    assert b.state is State.CLOSED
    run(b, fake_clock, "fail")  # 5/10 >= 0.5
    assert b.state is State.OPEN


def test_slow_call_rate_trips(fake_clock):
    b = make(fake_clock, slow_call_s=0.8, slow_call_rate=0.5, minimum_calls=4)
    run(b, fake_clock, "ok", took_ms=799)  # not slow
    run(b, fake_clock, "ok", took_ms=800)  # slow (>= slow_call_s)
    run(b, fake_clock, "ok", took_ms=10)
    assert b.state is State.CLOSED and b.metrics().slow_calls == 1
    run(b, fake_clock, "ok", took_ms=900)  # 2/4 slow >= 0.5
    assert b.state is State.OPEN


def test_window_drops_old_buckets(fake_clock):
    b = make(fake_clock, window_s=10, minimum_calls=4)
    fake_clock.set(1_700_000_000_000)  # a bucket boundary (bucket = 1 s)
    run(b, fake_clock, "fail")
    run(b, fake_clock, "fail")
    fake_clock.advance(9_999)  # still the 10th bucket of the window
    run(b, fake_clock, "ok")
    assert b.metrics().calls == 3
    fake_clock.advance(1)  # the first bucket leaves the window
    run(b, fake_clock, "fail")  # window: ok, fail -> 2 calls < 4
    assert b.state is State.CLOSED and b.metrics().calls == 2
    fake_clock.advance(60_000)
    run(b, fake_clock, "ok")
    assert b.metrics().calls == 1


def test_open_then_half_open_admits_exactly_half_open_calls_then_closes(fake_clock):
    events: list[Event] = []
    b = make(fake_clock, events, minimum_calls=2, half_open_calls=3, open_s=5)
    run(b, fake_clock, "fail")
    run(b, fake_clock, "fail")
    assert b.state is State.OPEN
    fake_clock.advance(4_999)
    assert run(b, fake_clock, "ok") == "rejected"
    fake_clock.advance(1)
    assert b.state is State.HALF_OPEN
    permits = []
    for _ in range(5):
        try:
            permits.append(b._admit())
        except BreakerOpenError:
            permits.append(None)
    assert sum(p is not None for p in permits) == 3 and permits[3:] == [None, None]
    for p in permits[:3]:
        assert b.state is State.HALF_OPEN
        b._finish(p, fake_clock(), False, False)
    assert b.state is State.CLOSED
    assert [(e.from_state, e.to_state) for e in events if e.kind == "transition"] == [
        ("CLOSED", "OPEN"), ("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED"),
    ]


def test_half_open_reopens_on_failures(fake_clock):
    b = make(fake_clock, minimum_calls=2, half_open_calls=3, failure_rate=0.5, open_s=5)
    run(b, fake_clock, "fail")
    run(b, fake_clock, "fail")
    fake_clock.advance(5_000)
    assert [run(b, fake_clock, o) for o in ("ok", "fail", "fail")] == ["ok", "failed", "failed"]
    assert b.state is State.OPEN  # 2/3 probes failed >= 0.5
    assert run(b, fake_clock, "ok") == "rejected"
    fake_clock.advance(5_000)
    assert [run(b, fake_clock, o) for o in ("ok", "fail", "ok")] == ["ok", "failed", "ok"]
    assert b.state is State.CLOSED  # 1/3 < 0.5


def test_half_open_probe_with_ignored_exception_gives_permit_back(fake_clock):
    b = make(fake_clock, minimum_calls=1, half_open_calls=1, ignore_exceptions=(Ignored,))
    run(b, fake_clock, "fail")
    fake_clock.advance(5_000)
    assert run(b, fake_clock, "ignored") == "ignored"
    assert b.state is State.HALF_OPEN
    assert run(b, fake_clock, "ok") == "ok"  # the permit came back
    assert b.state is State.CLOSED


def test_half_open_times_out_back_to_open(fake_clock):
    b = make(fake_clock, minimum_calls=1, half_open_calls=1, half_open_max_s=2)
    run(b, fake_clock, "fail")
    fake_clock.advance(5_000)
    permit = b._admit()  # a probe that never reports (hung call, killed process)
    fake_clock.advance(2_000)
    assert b.state is State.OPEN
    b._finish(permit, fake_clock(), False, False)  # a late answer of the old round changes nothing
    assert b.state is State.OPEN


def test_recorded_and_ignored_exceptions(fake_clock):
    b = make(fake_clock, minimum_calls=2, record_exceptions=(Boom,), ignore_exceptions=(Ignored,))

    @b
    def other() -> None:
        raise KeyError("not a recorded exception: counts as a success")

    with pytest.raises(KeyError):
        other()
    run(b, fake_clock, "ignored")
    m = b.metrics()
    assert (m.calls, m.failed_calls) == (1, 0)
    run(b, fake_clock, "fail")
    assert b.state is State.OPEN  # 1/2 failed


def test_force_open_and_reset(fake_clock):
    b = make(fake_clock)
    b.force_open()
    assert b.state is State.OPEN and b.metrics().forced
    fake_clock.advance(3_600_000)
    assert b.state is State.OPEN  # forced: no HALF_OPEN
    with pytest.raises(BreakerOpenError) as info:
        b.call(lambda: 1)
    assert info.value.name == "dep" and info.value.state == "OPEN"
    b.reset()
    assert b.state is State.CLOSED and b.call(lambda: 7) == 7


async def test_async_function(fake_clock):
    b = make(fake_clock, minimum_calls=2)

    @b
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        if x < 0:
            raise Boom()
        return x * 2

    assert await fetch(2) == 4
    with pytest.raises(Boom):
        await fetch(-1)
    assert b.state is State.OPEN
    with pytest.raises(BreakerOpenError):
        await fetch(1)
    fake_clock.advance(5_000)
    assert [await fetch(1) for _ in range(3)] == [2, 2, 2]
    assert b.state is State.CLOSED
    assert await b.acall(fetch.__wrapped__, 3) == 6  # type: ignore[attr-defined]


def test_default_clock_and_threads():
    """The real clock and 8 threads: every call is counted exactly once (the counters are under a lock)."""
    b = CircuitBreaker("threads", minimum_calls=10**9)
    f = b(lambda: None)
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for _ in range(2000):
            f()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.metrics().calls == 16_000


@pytest.mark.parametrize(
    "kw",
    [
        {"failure_rate": 0}, {"failure_rate": 1.5}, {"slow_call_rate": 0}, {"window_s": 0}, {"minimum_calls": 0},
        {"half_open_calls": 0}, {"open_s": -1}, {"window_s": 10, "buckets": 3}, {"slow_call_s": float("nan")},
    ],
)
def test_bad_config(kw):
    with pytest.raises(InvalidArgumentError):
        CircuitBreaker("x", **kw)  # type: ignore[arg-type]


def test_hook_failure_does_not_break_calls(fake_clock):
    def hook(e: Event) -> None:
        raise RuntimeError("broken hook")

    b = CircuitBreaker("hook", clock=fake_clock, minimum_calls=1, on_event=hook)
    run(b, fake_clock, "fail")
    assert b.state is State.OPEN


# --------------------------------------------------------------------------- Hypothesis: machine == model


class Model:
    """A reference written independently: keeps every recorded call since the last transition and filters by
    bucket; probes counted in plain lists."""

    def __init__(self, cfg: BreakerConfig) -> None:
        self.cfg = cfg
        self.state = "CLOSED"
        self.calls: list[tuple[int, bool, bool]] = []  # (bucket, failed, slow)
        self.opened = 0
        self.half_since = 0
        self.round = 0
        self.probes_out = 0
        self.results: list[tuple[bool, bool]] = []

    def go(self, state: str, now: int) -> None:
        self.state = state
        self.calls = []
        self.results = []
        self.probes_out = 0
        self.round += 1
        if state == "OPEN":
            self.opened = now
        if state == "HALF_OPEN":
            self.half_since = now

    def tick(self, now: int) -> None:
        if self.state == "OPEN" and now - self.opened >= self.cfg.open_ms:
            self.go("HALF_OPEN", now)
        elif self.state == "HALF_OPEN" and now - self.half_since >= self.cfg.half_open_max_ms:
            self.go("OPEN", now)

    def admit(self, now: int) -> tuple[str, int] | None:
        if self.state == "CLOSED":
            return ("call", self.round)
        self.tick(now)
        if self.state == "HALF_OPEN" and self.probes_out < self.cfg.half_open_calls:
            self.probes_out += 1
            return ("probe", self.round)
        return None

    def record(self, now: int, permit: tuple[str, int], failed: bool, slow: bool) -> None:
        kind, rnd = permit
        if kind == "call":
            if self.state != "CLOSED":
                return
            self.calls.append((now // self.cfg.bucket_ms, failed, slow))
            cur = now // self.cfg.bucket_ms
            live = [c for c in self.calls if c[0] > cur - self.cfg.buckets]
            n, f, s = len(live), sum(c[1] for c in live), sum(c[2] for c in live)
            if n >= self.cfg.minimum_calls and (f / n >= self.cfg.failure_rate or s / n >= self.cfg.slow_call_rate):
                self.go("OPEN", now)
            return
        if self.state != "HALF_OPEN" or rnd != self.round:
            return
        self.results.append((failed, slow))
        if len(self.results) == self.cfg.half_open_calls:
            n = len(self.results)
            f, s = sum(r[0] for r in self.results), sum(r[1] for r in self.results)
            self.go("OPEN" if f / n >= self.cfg.failure_rate or s / n >= self.cfg.slow_call_rate else "CLOSED", now)

    def release(self, permit: tuple[str, int]) -> None:
        if permit[0] == "probe" and self.state == "HALF_OPEN" and permit[1] == self.round:
            if self.probes_out > len(self.results):
                self.probes_out -= 1


@settings(max_examples=150, stateful_step_count=50, deadline=None)
class MachineVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1_700_000_000_000
        self.cfg = BreakerConfig(
            failure_rate=0.5, slow_call_rate=0.6, slow_call_ms=50, window_ms=1000, buckets=4, minimum_calls=2,
            open_ms=300, half_open_calls=2, half_open_max_ms=900,
        )
        self.m = Machine(self.cfg, self.now)
        self.model = Model(self.cfg)
        self.inflight: list[tuple[int, tuple[str, int]]] = []

    @rule(ms=st.integers(0, 700))
    def advance(self, ms: int) -> None:
        self.now += ms

    @rule()
    def start(self) -> None:
        permit, _ = self.m.admit(self.now)
        expected = self.model.admit(self.now)
        assert (permit is None) == (expected is None)
        if permit is not None and expected is not None:
            assert (permit == CALL) == (expected[0] == "call")
            self.inflight.append((permit, expected))

    @precondition(lambda self: self.inflight)
    @rule(data=st.data(), outcome=st.sampled_from(["ok", "fail", "ignored"]), slow=st.booleans())
    def finish(self, data: st.DataObject, outcome: str, slow: bool) -> None:
        i = data.draw(st.integers(0, len(self.inflight) - 1))
        permit, expected = self.inflight.pop(i)
        if outcome == "ignored":
            self.m.release(permit)
            self.model.release(expected)
        else:
            self.m.record(self.now, permit, outcome == "fail", slow)
            self.model.record(self.now, expected, outcome == "fail", slow)

    @invariant()
    def same_state(self) -> None:
        self.m.tick(self.now)
        self.model.tick(self.now)
        assert self.m.state.value == self.model.state
        if self.model.state == "CLOSED":
            cur = self.now // self.cfg.bucket_ms
            live = [c for c in self.model.calls if c[0] > cur - self.cfg.buckets]
            self.m.roll(self.now)
            assert (self.m.calls, self.m.failed, self.m.slow) == (
                len(live), sum(c[1] for c in live), sum(c[2] for c in live)
            )


TestMachineVsModel = MachineVsModel.TestCase


# --------------------------------------------------------------------------- the decorator (both closures) == model

steps = st.lists(
    st.tuples(st.integers(0, 400), st.sampled_from(["ok", "fail", "ignored"]), st.integers(0, 80)), max_size=60
)


@pytest.mark.parametrize("clock_kind", ["injected", "default"])
@settings(max_examples=80, deadline=None)
@given(seq=steps)
def test_decorated_calls_follow_the_model(clock_kind, seq):
    """The decorator's inlined success path (one closure for an injected clock, one reading time.monotonic_ns
    directly for the default clock) must behave exactly like Machine/Model."""
    import time as _time

    cfg = BreakerConfig(
        failure_rate=0.5, slow_call_rate=0.6, slow_call_ms=50, window_ms=1000, buckets=4, minimum_calls=2,
        open_ms=300, half_open_calls=2, half_open_max_ms=900,
    )
    now = [1_700_000_000_000]
    kw = {
        "failure_rate": 0.5, "slow_call_rate": 0.6, "slow_call_s": 0.05, "window_s": 1, "buckets": 4,
        "minimum_calls": 2, "open_s": 0.3, "half_open_calls": 2, "half_open_max_s": 0.9,
        "ignore_exceptions": (Ignored,),
    }
    real_ns = _time.monotonic_ns
    if clock_kind == "injected":
        b = CircuitBreaker("m", clock=lambda: now[0], **kw)
    else:
        _time.monotonic_ns = lambda: now[0] * 1_000_000  # type: ignore[assignment]
        b = CircuitBreaker("m", **kw)
    try:
        model = Model(cfg)
        model_now = now[0]

        for advance, outcome, took in seq:
            now[0] += advance

            @b
            def dep(outcome: str = outcome, took: int = took) -> None:
                now[0] += took
                if outcome == "fail":
                    raise Boom()
                if outcome == "ignored":
                    raise Ignored()

            permit = model.admit(now[0])
            try:
                dep()
                got = "ran"
            except (Boom, Ignored):
                got = "ran"
            except BreakerOpenError:
                got = "rejected"
            assert got == ("rejected" if permit is None else "ran")
            if permit is not None:
                if outcome == "ignored":
                    model.release(permit)
                else:
                    model.record(now[0], permit, outcome == "fail", took >= 50)
            model.tick(now[0])
            assert b.state.value == model.state
            model_now = now[0]
        assert model_now == now[0]
    finally:
        _time.monotonic_ns = real_ns  # type: ignore[assignment]


def test_clock_stepping_back_neither_breaks_nor_fakes_slow_calls(fake_clock):
    b = make(fake_clock, minimum_calls=4, slow_call_rate=0.5)
    run(b, fake_clock, "ok")
    run(b, fake_clock, "fail")

    @b
    def stepping_back() -> str:
        fake_clock.advance(-3_600_000)  # an NTP step back during the call
        return "ok"

    assert stepping_back() == "ok"  # a negative duration: not slow, counted in the current bucket
    m = b.metrics()
    assert (m.calls, m.failed_calls, m.slow_calls) == (3, 1, 0)
    run(b, fake_clock, "ok")
    assert b.state is State.CLOSED  # 1/4 failed
    fake_clock.advance(3_600_000 + 20_000)
    run(b, fake_clock, "ok")
    assert b.metrics().calls == 1  # time caught up: the old buckets left the window
