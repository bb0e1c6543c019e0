"""Snowflake and Butterfly: uniqueness, ordering, layouts, clock rollback, exhaustion (no servers needed)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distkit.errors import (
    ClockMovedBackwardsError,
    InvalidArgumentError,
    InvalidEpochError,
    InvalidLayoutError,
    InvalidWorkerIdError,
    TimestampExhaustedError,
)
from distkit.idgen import BUTTERFLY, Butterfly, Layout, RollbackPolicy, Snowflake, decode
from tests.fakeclock import FakeClock

EPOCH = 1_600_000_000_000


def test_eight_threads_million_ids_unique_increasing_and_decodable():
    gen = Snowflake(worker_id=7, datacenter_id=1)
    results: list[list[int]] = [[] for _ in range(8)]
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        barrier.wait()
        results[i] = [gen.next_id() for _ in range(125_000)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [x for r in results for x in r]
    assert len(everything) == 1_000_000 == len(set(everything))
    for r in results:
        assert all(a < b for a, b in zip(r, r[1:]))
    for value in everything[::997]:
        parts = gen.decode(value)
        assert (parts.worker_id, parts.datacenter_id) == (7, 1)
        assert (
            gen.layout.encode(ts=parts.timestamp_ms - gen.epoch_ms, datacenter=1, worker=7, sequence=parts.sequence)
            == value
        )


def test_next_ids_batches_are_unique_and_continue_the_sequence():
    gen = Snowflake(worker_id=3)
    ids = gen.next_ids(10_000) + [gen.next_id()] + gen.next_ids(5000)
    assert len(ids) == len(set(ids)) == 15_001
    assert ids == sorted(ids)
    assert gen.next_ids(0) == []


@st.composite
def layouts(draw):
    ts = draw(st.integers(1, 63))
    dc = draw(st.integers(0, 63 - ts))
    worker = draw(st.integers(0, 63 - ts - dc))
    return Layout(timestamp_bits=ts, datacenter_bits=dc, worker_bits=worker, sequence_bits=63 - ts - dc - worker)


@given(layout=layouts(), data=st.data())
@settings(max_examples=300)
def test_decode_encode_is_identity_for_any_layout(layout, data):
    ts = data.draw(st.integers(0, layout.max_timestamp))
    dc = data.draw(st.integers(0, layout.max_datacenter_id))
    worker = data.draw(st.integers(0, layout.max_worker_id))
    seq = data.draw(st.integers(0, layout.max_sequence))
    value = layout.encode(ts=ts, datacenter=dc, worker=worker, sequence=seq)
    assert 0 <= value < 1 << 63
    parts = decode(value, layout=layout, epoch_ms=EPOCH)
    assert parts == (ts + EPOCH, dc, worker, seq)


@given(steps=st.lists(st.integers(-50, 50), max_size=200), burst=st.integers(1, 3000))
@settings(max_examples=60, deadline=None)
def test_ids_from_one_generator_always_increase(steps, burst):
    clock = FakeClock(EPOCH + 10_000)
    gen = Snowflake(
        worker_id=1, epoch_ms=EPOCH, clock=clock, rollback=RollbackPolicy.LOGICAL, layout=Layout(41, 0, 12, 10)
    )
    last = -1
    for step in steps:
        clock.advance(step)
        for value in gen.next_ids(burst % 50 + 1) + [gen.next_id()]:
            assert value > last
            last = value


@pytest.mark.parametrize("bits", [(41, 5, 5, 11), (40, 5, 5, 12), (0, 5, 5, 53), (41, -1, 6, 17), (41.0, 5, 5, 12)])
def test_invalid_layouts_are_rejected(bits):
    with pytest.raises(InvalidLayoutError):
        Layout(*bits)


def test_out_of_range_ids_epoch_and_values_are_typed_errors():
    with pytest.raises(InvalidWorkerIdError, match="0..31"):
        Snowflake(worker_id=32)
    with pytest.raises(InvalidWorkerIdError):
        Snowflake(worker_id=1, datacenter_id=-1)
    with pytest.raises(ValueError):  # the typed errors are ValueErrors too
        Butterfly(worker_id=8192)
    clock = FakeClock(EPOCH)
    with pytest.raises(InvalidEpochError, match="future"):
        Snowflake(worker_id=1, epoch_ms=EPOCH + 1000, clock=clock)
    with pytest.raises(InvalidArgumentError):
        decode(-1)


def test_sequence_exhaustion_waits_for_the_next_millisecond():
    clock = FakeClock(EPOCH + 5000)
    gen = Snowflake(worker_id=1, epoch_ms=EPOCH, clock=clock)
    ids = [gen.next_id() for _ in range(4096 + 10)]
    assert len(set(ids)) == 4106
    parts = [gen.decode(i) for i in ids]
    assert {p.timestamp_ms for p in parts[:4096]} == {EPOCH + 5000}
    assert parts[4096].timestamp_ms == EPOCH + 5001 and parts[4096].sequence == 0
    assert clock.sleeps  # it waited (on the fake clock) instead of reusing a sequence


def test_small_rollback_within_wait_limit_waits_and_continues():
    clock = FakeClock(EPOCH + 10_000)
    gen = Snowflake(worker_id=1, epoch_ms=EPOCH, clock=clock, rollback=RollbackPolicy.WAIT, max_rollback_wait_ms=5)
    before = gen.next_id()
    clock.advance(-3)
    after = gen.next_id()
    assert after > before
    assert gen.decode(after).timestamp_ms >= gen.decode(before).timestamp_ms
    assert sum(clock.sleeps) > 0


@pytest.mark.parametrize("policy", [RollbackPolicy.WAIT, RollbackPolicy.RAISE])
def test_large_rollback_raises_with_the_size(policy):
    clock = FakeClock(EPOCH + 100_000)
    gen = Snowflake(worker_id=1, epoch_ms=EPOCH, clock=clock, rollback=policy, max_rollback_wait_ms=5)
    gen.next_id()
    clock.advance(-10_000)
    with pytest.raises(ClockMovedBackwardsError, match="10000 ms") as exc:
        gen.next_id()
    assert exc.value.backwards_ms == 10_000
    clock.advance(10_001)
    gen.next_id()  # usable again once the clock caught up


@pytest.mark.parametrize(
    "make",
    [
        lambda clock: Snowflake(worker_id=1, epoch_ms=EPOCH, clock=clock, rollback=RollbackPolicy.LOGICAL),
        lambda clock: Butterfly(worker_id=1, epoch_ms=EPOCH, clock=clock),
    ],
    ids=["snowflake-logical", "butterfly"],
)
def test_logical_generators_never_stop_through_an_hour_rollback(make):
    clock = FakeClock(EPOCH + 7_200_000)
    gen = make(clock)
    last = gen.next_id()
    clock.advance(-10_000)
    for _ in range(3):
        for _ in range(3000):
            value = gen.next_id()
            assert value > last
            last = value
        clock.advance(-1_200_000)  # 3 x 20 min back: one hour in all
        clock.advance(1)
    assert sum(clock.sleeps) < 3  # never waited for the clock to come back


def test_butterfly_never_runs_more_than_max_ahead_ms_ahead():
    clock = FakeClock(EPOCH + 1000)
    gen = Butterfly(worker_id=1, epoch_ms=EPOCH, clock=clock, max_ahead_ms=50)
    start = clock()
    worst = 0
    for value in gen.next_ids(512 * 400):  # 400 ms worth of sequence at a frozen clock
        worst = max(worst, gen.decode(value).timestamp_ms - clock())
    assert worst <= 50
    assert clock() - start >= 400 - 51  # it slept (on the fake clock) instead of running ahead
    assert gen.layout == BUTTERFLY


def test_timestamp_exhaustion_is_explicit_and_visible_in_advance():
    layout = Layout(timestamp_bits=20, datacenter_bits=0, worker_bits=10, sequence_bits=33)
    clock = FakeClock(EPOCH + (1 << 20) - 2)
    gen = Snowflake(worker_id=1, epoch_ms=EPOCH, layout=layout, clock=clock)
    assert gen.exhausts_at == dt.datetime.fromtimestamp((EPOCH + (1 << 20)) / 1000, tz=dt.timezone.utc)
    gen.next_id()
    clock.advance(5)
    with pytest.raises(TimestampExhaustedError, match="20-bit timestamp field ran out"):
        gen.next_id()
    with pytest.raises(TimestampExhaustedError):
        Snowflake(worker_id=1, epoch_ms=EPOCH, layout=layout, clock=clock)
    assert Snowflake(worker_id=1).exhausts_at.year == 2080


class _StepBackOnSleep(FakeClock):
    """A clock that NTP steps back an hour the first time the generator sleeps on it."""

    def __init__(self, start_ms: int) -> None:
        super().__init__(start_ms)
        self.stepped = False

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if not self.stepped:
            self.stepped = True
            self.advance(-3_600_000)


def test_wait_rechecks_after_sleeping_and_raises_if_the_clock_stepped_back_again():
    """10: a <= 5 ms rollback wait must not turn into an hour's sleep when the clock steps back during it."""
    clock = _StepBackOnSleep(EPOCH + 10_000_000)
    gen = Snowflake(worker_id=1, epoch_ms=EPOCH, clock=clock, rollback=RollbackPolicy.WAIT, max_rollback_wait_ms=5)
    gen.next_id()
    clock.advance(-3)
    with pytest.raises(ClockMovedBackwardsError, match="3600"):
        gen.next_id()
    assert sum(clock.sleeps) < 0.01  # slept ~3 ms, never the hour
    seq_clock = _StepBackOnSleep(EPOCH + 10_000_000)  # the same during a sequence-wrap wait
    gen = Snowflake(worker_id=1, epoch_ms=EPOCH, clock=seq_clock)
    with pytest.raises(ClockMovedBackwardsError):
        gen.next_ids(4097)
    assert sum(seq_clock.sleeps) < 0.01


def test_each_bad_argument_has_its_own_typed_error():
    """11: layout, policy, limits, counts, epochs and decode inputs each raise their own InvalidArgumentError."""
    from distkit.errors import (
        InvalidCountError,
        InvalidIdError,
        InvalidRollbackPolicyError,
        InvalidTimeLimitError,
    )

    with pytest.raises(InvalidLayoutError):
        Snowflake(worker_id=1, layout="snowflake")
    with pytest.raises(InvalidRollbackPolicyError):
        Snowflake(worker_id=1, rollback="wait")
    with pytest.raises(InvalidTimeLimitError):
        Snowflake(worker_id=1, max_rollback_wait_ms=-1)
    with pytest.raises(InvalidTimeLimitError):
        Butterfly(worker_id=1, max_ahead_ms=-5)
    with pytest.raises(InvalidCountError):
        Snowflake(worker_id=1).next_ids(-1)
    with pytest.raises(InvalidCountError):
        Snowflake(worker_id=1).next_ids(2.0)
    with pytest.raises(InvalidEpochError):
        Snowflake(worker_id=1, epoch_ms="x")
    for bad in (True, -5, 1 << 63, "12"):
        with pytest.raises(InvalidIdError):
            decode(bad)
    for cls in (InvalidCountError, InvalidIdError, InvalidRollbackPolicyError, InvalidTimeLimitError):
        assert issubclass(cls, InvalidArgumentError) and not issubclass(cls, InvalidWorkerIdError)


def test_no_hook_per_generator_or_lease_and_dropped_generators_are_freed(monkeypatch):
    """12: one module-level fork hook over a WeakSet; creating generators registers nothing."""
    import atexit
    import gc
    import os

    from distkit.idgen import generator
    from distkit.idgen.lease.base import WorkerLease

    registered: list[object] = []
    monkeypatch.setattr(os, "register_at_fork", lambda **kw: registered.append(kw))
    monkeypatch.setattr(atexit, "register", lambda fn, *a, **kw: registered.append(fn))
    gc.collect()
    before = len(generator._LIVE)
    for i in range(20_000):
        Snowflake(worker_id=i % 32)
        Butterfly(worker_id=i % 8192)
    for _ in range(100):
        WorkerLease(namespace="n", max_worker_id=1, ttl_s=1, on_lost=None)
    gc.collect()
    assert registered == []
    assert len(generator._LIVE) == before


def test_static_butterfly_never_runs_ahead_unless_asked_and_then_waits_at_start():
    """3 (library side): without a lease nothing persists how far a Butterfly ran ahead, so by default it does not
    run ahead at all; an explicit max_ahead_ms is waited out once at start instead."""
    clock = FakeClock(EPOCH + 1000)
    gen = Butterfly(worker_id=1, epoch_ms=EPOCH, clock=clock)
    for value in gen.next_ids(512 * 50):  # 50 ms worth of sequence at a frozen clock
        assert gen.decode(value).timestamp_ms <= clock()
    assert gen.max_ahead_ms == 0
    t0 = clock()
    ahead = Butterfly(worker_id=1, epoch_ms=EPOCH, clock=clock, max_ahead_ms=300)
    assert clock() - t0 >= 300  # waited out where a previous incarnation may have reached
    start = clock()
    assert max(ahead.decode(v).timestamp_ms for v in ahead.next_ids(512 * 100)) <= start + 300


def test_static_close_waits_past_the_last_timestamp_then_refuses_ids():
    from distkit.errors import GeneratorClosedError

    clock = FakeClock(EPOCH + 1000)
    gen = Snowflake(worker_id=1, epoch_ms=EPOCH, clock=clock)
    last = gen.next_id()
    gen.close()
    assert clock() > gen.decode(last).timestamp_ms  # a restart on this worker id starts later
    with pytest.raises(GeneratorClosedError):
        gen.next_id()
    with pytest.raises(GeneratorClosedError):
        gen.next_ids(3)
    with Snowflake(worker_id=2) as g:
        g.next_id()
    assert g.closed


def test_a_timestamp_beyond_the_limit_is_never_issued():
    """The limit is compared after the clock read: a static generator at its layout's end raises, never wraps."""
    layout = Layout(timestamp_bits=20, datacenter_bits=0, worker_bits=10, sequence_bits=33)
    clock = FakeClock(EPOCH + (1 << 20) - 1)
    gen = Snowflake(worker_id=1, epoch_ms=EPOCH, layout=layout, clock=clock)
    gen.next_id()
    clock.advance(1)
    for _ in range(3):
        with pytest.raises(TimestampExhaustedError):
            gen.next_id()


@pytest.mark.parametrize("max_ahead_ms", [None, 2000])
def test_static_butterfly_restarted_at_once_repeats_nothing(max_ahead_ms):
    """3: a burst (frozen clock: all of it "runs ahead"), close, and a new incarnation on the same worker id right
    away. Before: the first ran 2 s ahead and the second started at "now": 2 s of ids repeated."""
    clock = FakeClock(EPOCH + 100_000)
    first = Butterfly(worker_id=5, epoch_ms=EPOCH, clock=clock, max_ahead_ms=max_ahead_ms)
    a = first.next_ids(512 * 300)
    first.close()
    second = Butterfly(worker_id=5, epoch_ms=EPOCH, clock=clock, max_ahead_ms=max_ahead_ms)
    b = second.next_ids(512 * 300)
    assert len(set(a) & set(b)) == 0
