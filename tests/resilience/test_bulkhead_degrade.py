"""Bulkhead caps (threads and asyncio) and degrade fallbacks, composed with breakers and qps_limit."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from distkit.errors import BreakerOpenError, BulkheadFullError, InvalidArgumentError, RateLimitExceeded
from distkit.ratelimit import FixedWindow, MemoryBackend, Rate, qps_limit
from distkit.resilience import Bulkhead, CircuitBreaker, Event, State, degrade


class InFlight:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def test_64_threads_never_exceed_8_in_flight_and_late_waiters_get_full():
    bulkhead = Bulkhead("dep", max_concurrent=8, max_wait_s=0.2)
    gauge = InFlight()
    release = threading.Event()
    entered = threading.Semaphore(0)
    ok: list[int] = []
    full: list[BulkheadFullError] = []

    @bulkhead
    def call(i: int) -> int:
        gauge.enter()
        entered.release()
        release.wait(30)  # hold every slot until the waiters have timed out
        gauge.leave()
        return i

    def worker(i: int) -> None:
        try:
            ok.append(call(i))
        except BulkheadFullError as exc:
            full.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for _ in range(8):
        assert entered.acquire(timeout=30)
    deadline = time.monotonic() + 30
    while len(full) < 56 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(full) == 56  # every waiter gave up after max_wait_s
    assert all(e.waited_s >= 0.2 and e.max_concurrent == 8 for e in full)
    release.set()
    for t in threads:
        t.join()
    assert len(ok) == 8 and gauge.peak == 8
    m = bulkhead.metrics()
    assert (m.in_flight, m.waiting, m.peak_in_flight, m.rejected) == (0, 0, 8, 56)


def test_waiters_within_max_wait_get_a_slot_in_turn():
    bulkhead = Bulkhead("dep", max_concurrent=8, max_wait_s=30)
    gauge = InFlight()
    barrier = threading.Barrier(64)

    @bulkhead
    def call() -> None:
        gauge.enter()
        time.sleep(0.002)
        gauge.leave()

    def worker() -> None:
        barrier.wait()
        for _ in range(5):
            call()

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gauge.peak == 8
    assert bulkhead.metrics().rejected == 0 and bulkhead.metrics().in_flight == 0


def test_no_wait_rejects_at_once():
    bulkhead = Bulkhead("dep", max_concurrent=1)
    with bulkhead:
        with pytest.raises(BulkheadFullError), bulkhead:
            pass
    with bulkhead:
        pass


async def test_asyncio_64_tasks_on_8_slots():
    bulkhead = Bulkhead("dep", max_concurrent=8, max_wait_s=0.2)
    now = peak = 0
    release = asyncio.Event()

    @bulkhead
    async def call() -> str:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        await release.wait()
        now -= 1
        return "ok"

    tasks = [asyncio.create_task(call()) for _ in range(64)]
    deadline = time.monotonic() + 30
    while sum(t.done() for t in tasks) < 56 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # every waiter gives up after max_wait_s while the 8 hold their slots
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("ok") == 8 and peak == 8
    assert sum(isinstance(r, BulkheadFullError) for r in results) == 56
    m = bulkhead.metrics()
    assert (m.in_flight, m.waiting, m.rejected) == (0, 0, 56)


async def test_asyncio_waiters_get_slots_and_cancellation_passes_them_on():
    bulkhead = Bulkhead("dep", max_concurrent=2, max_wait_s=30)
    peak = now = 0

    @bulkhead
    async def call() -> None:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        await asyncio.sleep(0.001)
        now -= 1

    await asyncio.gather(*(call() for _ in range(50)))
    assert peak == 2
    async with bulkhead, bulkhead:
        waiter = asyncio.create_task(bulkhead.aacquire())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert bulkhead.metrics().in_flight == 0
    async with bulkhead, bulkhead:
        pass  # both slots are free again


def test_bad_bulkhead_config():
    with pytest.raises(InvalidArgumentError):
        Bulkhead("x", max_concurrent=0)
    with pytest.raises(InvalidArgumentError):
        Bulkhead("x", max_wait_s=-1)


def test_degrade_composes_breaker_bulkhead_and_qps_limit(fake_clock):
    events: list[Event] = []
    breaker = CircuitBreaker("pay", minimum_calls=2, clock=fake_clock)
    bulkhead = Bulkhead("pay", max_concurrent=1)
    limiter = FixedWindow(Rate(3, per_s=60), backend=MemoryBackend(clock=fake_clock))
    calls: list[str] = []

    @degrade(fallback=lambda order: f"cached:{order}", on_event=events.append)
    @qps_limit(limiter, key="pay")
    @breaker
    @bulkhead
    def pay(order: str) -> str:
        calls.append(order)
        if order.startswith("bad"):
            raise ConnectionError(order)
        return f"paid:{order}"

    assert pay("a") == "paid:a"
    with pytest.raises(ConnectionError):
        pay("bad1")  # not in `on`: propagates
    assert breaker.state is State.OPEN  # 1/2 failed
    assert pay("b") == "cached:b"  # BreakerOpenError -> fallback
    assert pay("c") == "cached:c"  # the limiter's 4th call: RateLimitExceeded -> fallback
    assert calls == ["a", "bad1"]
    assert [e.reason for e in events] == ["BreakerOpenError", "RateLimitExceeded"]
    with bulkhead:
        breaker.reset()
        fake_clock.advance(60_000)
        assert pay("d") == "cached:d"  # BulkheadFullError -> fallback


async def test_degrade_async_with_async_fallback():
    breaker = CircuitBreaker("pay", minimum_calls=1)

    async def fallback(x: int) -> int:
        return -x

    @degrade(fallback=fallback, on=(BreakerOpenError, RateLimitExceeded))
    @breaker
    async def get(x: int) -> int:
        if x == 0:
            raise ValueError("zero")
        return x

    assert await get(3) == 3
    with pytest.raises(ValueError):
        await get(0)
    assert await get(5) == -5
    breaker.force_open()
    assert await get(6) == -6


def test_degrade_rejects_bad_arguments():
    with pytest.raises(InvalidArgumentError):
        degrade(fallback=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        degrade(fallback=lambda: 1, on=(ValueError, "x"))  # type: ignore[arg-type]


async def test_one_cap_for_threads_and_tasks():
    """A slot freed by a thread goes to a waiting asyncio task (and back): one cap, FIFO across both kinds."""
    bulkhead = Bulkhead("mixed", max_concurrent=1, max_wait_s=30)
    held = threading.Event()
    go = threading.Event()

    def thread_body() -> None:
        with bulkhead:
            held.set()
            go.wait(30)

    t = threading.Thread(target=thread_body)
    t.start()
    assert await asyncio.to_thread(held.wait, 30)
    waiter = asyncio.create_task(bulkhead.aacquire())
    await asyncio.sleep(0.05)
    assert not waiter.done() and bulkhead.metrics().waiting == 1
    go.set()  # the thread releases: the slot is handed to the task through its loop
    await asyncio.wait_for(waiter, 30)
    assert bulkhead.metrics().in_flight == 1
    got = []
    t2 = threading.Thread(target=lambda: got.append(bulkhead.acquire()))
    t2.start()
    await asyncio.sleep(0.05)
    assert t2.is_alive()  # the thread waits for the task's slot
    bulkhead.release()
    await asyncio.to_thread(t2.join, 30)
    assert got == [None] and bulkhead.metrics().in_flight == 1
    bulkhead.release()
    t.join()
    assert bulkhead.metrics().in_flight == 0
