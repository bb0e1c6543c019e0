"""Every algorithm, exact under a fake clock, on the memory backend and on real Redis (one suite)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distkit.errors import InvalidRateError
from distkit.ratelimit import (
    FixedWindow,
    LeakyBucket,
    MemoryBackend,
    Rate,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)
from tests.fakeclock import FakeClock


def approx(a, b):
    return math.isclose(a, b, abs_tol=1e-6)


def test_redis_cell_golden_values(backend_for, fake_clock):
    # redis-cell: CL.THROTTLE key 15 30 60 -> allowed, limit 16, remaining 15, retry -1, reset 2
    lim = LeakyBucket(Rate(30, per_s=60), capacity=16, backend=backend_for(fake_clock))
    d = lim.acquire("user:1")
    assert (d.allowed, d.limit, d.remaining) == (True, 16, 15)
    assert approx(d.reset_after_s, 2.0) and d.retry_after_s == 0
    for i in range(15):
        assert lim.acquire("user:1").remaining == 14 - i
    d = lim.acquire("user:1")
    assert not d.allowed and d.remaining == 0 and approx(d.retry_after_s, 2.0)
    fake_clock.advance(2000)
    assert lim.acquire("user:1").allowed


def test_token_bucket_refills_in_fractions(backend_for, fake_clock):
    lim = TokenBucket(Rate(10, per_s=1.0), burst=5, backend=backend_for(fake_clock))
    assert [lim.acquire("k").allowed for _ in range(6)] == [True] * 5 + [False]
    d = lim.acquire("k")
    assert approx(d.retry_after_s, 0.1)
    fake_clock.advance(50)
    d = lim.acquire("k")
    assert not d.allowed and approx(d.retry_after_s, 0.05)
    fake_clock.advance(50)
    assert lim.acquire("k").allowed
    fake_clock.advance(250)  # 2.5 tokens back: 2 usable
    assert [lim.acquire("k").allowed for _ in range(3)] == [True, True, False]
    assert lim.peek("k").remaining == 0
    fake_clock.advance(10_000)
    assert lim.peek("k").remaining == 5  # never more than the burst


def test_fixed_window_edges(backend_for, fake_clock):
    fake_clock.set(1_700_000_000_999)  # 1 ms before a window edge
    lim = FixedWindow(Rate(3, per_s=1.0), backend=backend_for(fake_clock))
    assert [lim.acquire("k").allowed for _ in range(4)] == [True, True, True, False]
    d = lim.acquire("k")
    assert approx(d.retry_after_s, 0.001) and approx(d.reset_after_s, 0.001)
    fake_clock.advance(1)
    d = lim.acquire("k")
    assert d.allowed and d.remaining == 2 and approx(d.reset_after_s, 1.0)


def test_sliding_window_log_is_exact(backend_for, fake_clock):
    fake_clock.set(1_700_000_000_000)
    lim = SlidingWindowLog(Rate(3, per_s=1.0), backend=backend_for(fake_clock))
    for step in (0, 500, 400):
        fake_clock.advance(step)
        assert lim.acquire("k").allowed
    fake_clock.advance(99)  # t = 999 ms: three in the last second
    d = lim.acquire("k")
    assert not d.allowed and approx(d.retry_after_s, 0.001)
    fake_clock.advance(1)  # t = 1000: the first one left the window
    assert lim.acquire("k").allowed
    assert not lim.acquire("k").allowed


def test_sliding_window_counter_weights_the_previous_window(backend_for, fake_clock):
    fake_clock.set(1_700_000_000_000)
    lim = SlidingWindowCounter(Rate(10, per_s=1.0), backend=backend_for(fake_clock))
    assert sum(lim.acquire("k").allowed for _ in range(12)) == 10
    fake_clock.advance(1500)  # half-way through the next window: previous counts 10 * 0.5 = 5
    assert sum(lim.acquire("k").allowed for _ in range(12)) == 5
    d = lim.acquire("k")
    assert not d.allowed and d.retry_after_s > 0


def test_queue_mode_spaces_requests_exactly(backend_for, fake_clock):
    lim = LeakyBucket(Rate(10, per_s=1.0), capacity=11, mode="queue", backend=backend_for(fake_clock))
    decisions = [lim.acquire("k") for _ in range(12)]
    assert all(d.allowed for d in decisions[:11]) and not decisions[11].allowed
    assert [round(d.delay_s, 6) for d in decisions[:11]] == [round(i * 0.1, 6) for i in range(11)]
    assert decisions[11].retry_after_s > 0


def test_cost_rules(backend_for, fake_clock):
    lim = TokenBucket(Rate(10, per_s=1.0), burst=5, backend=backend_for(fake_clock))
    with pytest.raises(InvalidRateError, match="exceeds the limit 5"):
        lim.acquire("k", cost=6)
    with pytest.raises(ValueError):
        lim.acquire("k", cost=-1)
    assert lim.acquire("k", cost=3).remaining == 2
    peek = lim.peek("k")
    assert peek.remaining == 2 and lim.peek("k").remaining == 2  # cost 0 changes nothing
    assert not lim.acquire("k", cost=3).allowed and lim.acquire("k", cost=2).allowed


def test_acquire_many_is_one_batch_with_the_same_answers(backend_for, fake_clock):
    lim = FixedWindow(Rate(3, per_s=60), backend=backend_for(fake_clock))
    ds = lim.acquire_many([("a", 1), ("b", 3), ("a", 2), ("a", 1)])
    assert [d.allowed for d in ds] == [True, True, True, False]
    assert [d.remaining for d in ds] == [2, 0, 0, 0]


LIMITERS = {
    "token": lambda b: TokenBucket(Rate(10, per_s=1.0), burst=4, backend=b),
    "leaky-queue": lambda b: LeakyBucket(Rate(10, per_s=1.0), capacity=4, mode="queue", backend=b),
    "fixed": lambda b: FixedWindow(Rate(5, per_s=1.0), backend=b),
    "log": lambda b: SlidingWindowLog(Rate(5, per_s=1.0), backend=b),
    "counter": lambda b: SlidingWindowCounter(Rate(5, per_s=1.0), backend=b),
}


@pytest.mark.parametrize("algo", list(LIMITERS))
def test_a_large_batch_answers_exactly_like_calls_one_by_one(algo, backend_for, fake_clock):
    """acquire_many splits into script calls of many keys each (one round trip): the answers must be exactly
    those of the same requests made one at a time, in order, repeated keys included."""
    requests = [(f"k{(i * 7) % 30}", (i % 3) + (i % 2)) for i in range(250)]  # > one script batch; costs 0..3
    batched = LIMITERS[algo](backend_for(fake_clock)).acquire_many(requests)
    one_by_one = LIMITERS[algo](MemoryBackend(clock=fake_clock))
    expected = [one_by_one.acquire(k, c) for k, c in requests]
    assert [(d.allowed, d.remaining) for d in batched] == [(d.allowed, d.remaining) for d in expected]
    for got, want in zip(batched, expected, strict=True):
        assert approx(got.retry_after_s, want.retry_after_s) and approx(got.reset_after_s, want.reset_after_s)
        assert approx(got.delay_s, want.delay_s)
    assert 0 < sum(d.allowed for d in batched) < len(requests)  # both answers occur


def test_invalid_rates():
    for bad in [(0, 1.0), (5, 0), (5, -1), (1.5, 1.0), (True, 1.0)]:
        with pytest.raises(InvalidRateError):
            Rate(*bad)
    with pytest.raises(InvalidRateError):
        TokenBucket(Rate(5), burst=0)
    with pytest.raises(InvalidRateError):
        LeakyBucket(Rate(5), capacity=3, mode="drop")


def test_headers():
    lim = FixedWindow(Rate(2, per_s=60))
    lim.acquire("k")
    ok = lim.acquire("k")
    assert ok.headers()["RateLimit-Policy"] == "default;q=2;w=60"
    assert ok.headers()["X-RateLimit-Remaining"] == "0" and "Retry-After" not in ok.headers()
    denied = lim.acquire("k").headers()
    assert int(denied["Retry-After"]) >= 1 and denied["RateLimit"] == f"default;r=0;t={denied['Retry-After']}"


@st.composite
def arrivals(draw):
    gaps = draw(st.lists(st.integers(0, 400), min_size=1, max_size=300))
    costs = draw(st.lists(st.integers(1, 3), min_size=len(gaps), max_size=len(gaps)))
    return list(zip(gaps, costs))


@given(arrivals())
@settings(max_examples=150, deadline=None)
def test_sliding_log_never_allows_more_than_n_in_any_window(seq):
    clock = FakeClock(1_700_000_000_000)
    n, period = 5, 1000
    lim = SlidingWindowLog(Rate(n, per_s=period / 1000), backend=MemoryBackend(clock=clock))
    granted: list[int] = []
    for gap, cost in seq:
        clock.advance(gap)
        if lim.acquire("k", cost=cost).allowed:
            granted += [clock()] * cost
    for i, t in enumerate(granted):  # every window (t - period, t] ending at a grant
        assert sum(1 for u in granted[: i + 1] if u > t - period) <= n


@given(arrivals())
@settings(max_examples=150, deadline=None)
def test_sliding_counter_never_allows_more_than_2n_in_any_window(seq):
    clock = FakeClock(1_700_000_000_000)
    n, period = 5, 1000
    lim = SlidingWindowCounter(Rate(n, per_s=1.0), backend=MemoryBackend(clock=clock))
    granted: list[int] = []
    for gap, cost in seq:
        clock.advance(gap)
        if lim.acquire("k", cost=cost).allowed:
            granted += [clock()] * cost
    for i, t in enumerate(granted):
        assert sum(1 for u in granted[: i + 1] if u > t - period) <= 2 * n


@given(st.integers(50, 400), st.integers(0, 999))
@settings(max_examples=25, deadline=None)
def test_sliding_counter_is_within_one_percent_on_smooth_traffic(rate_per_s, phase_ms):
    clock = FakeClock(1_700_000_000_000 + phase_ms)
    n = 100
    counter = SlidingWindowCounter(Rate(n, per_s=1.0), backend=MemoryBackend(clock=clock))
    exact = SlidingWindowLog(Rate(n, per_s=1.0), backend=MemoryBackend(clock=clock))
    gap_us = 1_000_000 / rate_per_s
    got_counter = got_exact = 0
    t_us = 0.0
    for i in range(rate_per_s * 12):  # twelve seconds of evenly spaced requests; compare the last ten
        t_us += gap_us
        clock.set(1_700_000_000_000 + phase_ms + int(t_us // 1000))
        c, e = counter.acquire("k").allowed, exact.acquire("k").allowed
        if i >= rate_per_s * 2:
            got_counter += c
            got_exact += e
    assert abs(got_counter - got_exact) <= 0.01 * got_exact + 1


GUAVA_WARM_UP = [0, 1375, 1125, 875, 625, 500, 500, 500]  # Guava RateLimiterTest.testWarmUp, "R0.00, R1.38, …"


def test_warm_up_replays_guavas_published_sequence(backend_for, fake_clock):
    """Guava's own testWarmUp: RateLimiter.create(2.0, 4000 ms, cold factor 3); acquire() x8; sleep 0.5 + 4 s
    (cold again): the same 8 waits; sleep 0.5 + 2 s (not cold yet): no warm-up waits."""
    lim = TokenBucket(Rate(2, per_s=1.0), warmup_s=4.0, backend=backend_for(fake_clock))

    def eight():
        waits = []
        for _ in range(8):
            t0 = fake_clock()
            lim.wait("k")
            waits.append(fake_clock() - t0)
        return waits

    assert eight() == GUAVA_WARM_UP
    fake_clock.advance(500 + 4000)
    assert eight() == GUAVA_WARM_UP
    fake_clock.advance(500 + 2000)
    assert eight() == [0] + [500] * 7
    # Guava prints them with %.2f, half up: the published strings
    from decimal import ROUND_HALF_UP, Decimal

    shown = [f"R{Decimal(w) / 1000:.3f}" for w in GUAVA_WARM_UP]
    assert [f"R{Decimal(s[1:]).quantize(Decimal('0.01'), ROUND_HALF_UP)}" for s in shown] == [
        "R0.00", "R1.38", "R1.13", "R0.88", "R0.63", "R0.50", "R0.50", "R0.50"
    ]


def test_warm_up_matches_guava_on_the_issue_figures(backend_for, fake_clock):
    """10/s with a 10 s warm-up: Guava admits 50 in the first 10 s of saturating demand (the trapezoid's area),
    then exactly the stable rate, no burst; after 5 s idle, 50 simultaneous tries get 1."""
    lim = TokenBucket(Rate(10, per_s=1.0), warmup_s=10.0, backend=backend_for(fake_clock))
    assert lim.limit == 1
    start = fake_clock()
    first = 0
    while fake_clock() - start < 10_000:  # saturating demand: the next acquire as soon as the last one returns
        lim.wait("k")
        first += 1
    assert 50 <= first <= 51
    later = 0
    for _ in range(1000):  # then a try every 10 ms for 10 s
        later += lim.acquire("k").allowed
        fake_clock.advance(10)
    assert 99 <= later <= 100  # warm: the stable rate, and never a burst as warm-up ends
    fake_clock.advance(5000)
    assert sum(lim.acquire("k").allowed for _ in range(50)) == 1
    with pytest.raises(InvalidRateError, match="no burst"):
        TokenBucket(Rate(10, per_s=1.0), burst=5, warmup_s=3.0)


def _guava_acquires(p, state, now, n):
    """Guava's acquire() on the pure model in µs: try, and on denial wait exactly retry_after; the waits."""
    from distkit.ratelimit.algorithms import warming_up

    waits = []
    for _ in range(n):
        waited = 0
        while True:
            new, raw = warming_up(state, now, 1, p)
            if raw[0]:
                state = new
                break
            now += raw[2]
            waited += raw[2]
        waits.append(waited)
    return waits, state, now


def _shown(waits_us):
    from decimal import ROUND_HALF_UP, Decimal

    return ", ".join(f"R{(Decimal(w) / 10**6).quantize(Decimal('0.01'), ROUND_HALF_UP)}" for w in waits_us)


def test_warm_up_rate_change_replays_guavas_published_sequence():
    """Guava RateLimiterTest.testWarmUpAndUpdate (2/s, 4 s warm-up, then setRate(4.0)), in µs like Guava."""
    from distkit.ratelimit.algorithms import Params

    def p(n):
        return Params(limit=1, period_us=1_000_000, count=n, mode="warm", warmup_us=4_000_000)

    now, state, seen = 1_796_000_000_000_000, None, []
    for rate, sleep_us, n in ((2, 0, 8), (2, 4_500_000, 3), (4, 0, 1), (4, 0, 4), (4, 4_250_000, 11)):
        now += sleep_us
        waits, state, now = _guava_acquires(p(rate), state, now, n)
        seen.append(_shown(waits))
    assert seen == [
        "R0.00, R1.38, R1.13, R0.88, R0.63, R0.50, R0.50, R0.50",
        "R0.00, R1.38, R1.13",
        "R0.88",  # we repay the debt of the last acquire (imposed by the old rate)
        "R0.34, R0.28, R0.25, R0.25",
        "R0.00, R0.72, R0.66, R0.59, R0.53, R0.47, R0.41, R0.34, R0.28, R0.25, R0.25",
    ]


def test_warm_up_rate_change_is_the_same_on_every_backend(backend_for):
    def run(backend_of):
        clock = FakeClock(1_796_000_000_000)
        lim = TokenBucket(Rate(2, per_s=1.0), warmup_s=4.0, backend=backend_of(clock), name=f"w{clock()}")
        waits = []
        for rate, sleep_ms, n in ((2, 0, 8), (2, 4500, 3), (4, 0, 5), (4, 4250, 11)):
            if rate != lim.rate.count:
                lim.set_rate(Rate(rate, per_s=1.0))
            clock.advance(sleep_ms)
            for _ in range(n):
                t0 = clock()
                lim.wait("k")
                waits.append(clock() - t0)
        return waits

    assert run(backend_for) == run(lambda clock: MemoryBackend(clock=clock))
