"""Bounded calls (issue 16 section 1, locks part) and defect 8 of issue 13: with a *default* redis-py client
(its retries with backoff) and Redis killed or black-holed, every lock call returns or raises within its
deadline + 250 ms, ``on_lost`` fires no later than the last successful renewal + the lease, on a thread
of its own, and a lost hold can be dropped without Redis. Private servers only (``private_redis``)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from distkit.errors import BackendUnavailableError, LockLostError
from distkit.locks import AsyncLocks, Locks
from tests.locks.conftest import BlackHoleProxy, runner_bounds_calls
from tests.locks.test_lock import poll

SLACK_S = 0.25


def timed(fn: Any, limit: float) -> tuple[float, Any]:
    """Run ``fn`` in a daemon thread; fail unless it returns or raises within ``limit`` seconds."""
    box: dict[str, Any] = {}

    def body() -> None:
        t0 = time.monotonic()
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["value"] = exc
        box["took"] = time.monotonic() - t0

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(limit + 5)
    assert "took" in box, f"still blocked {limit + 5:.1f} s later"
    return box["took"], box["value"]


def need_bounded_runner(url: str) -> None:
    if not runner_bounds_calls(url):
        pytest.xfail("distkit._redis.Runner does not honour deadline= yet (the redis-plumbing work lands it)")


def test_on_lost_fires_within_the_lease_when_redis_is_black_holed(blackhole: BlackHoleProxy, namespace: str) -> None:
    lease_ms = 900
    client = redis.Redis.from_url(blackhole.url)  # default client: retries with backoff, no socket timeout
    locks = Locks(client, namespace=namespace, lease_ms=lease_ms)
    lock = locks.lock("held")
    fired: list[tuple[float, str]] = []
    lock.on_lost = lambda: fired.append((time.monotonic(), threading.current_thread().name))
    lock.acquire()
    time.sleep(lease_ms / 3000 + 0.1)  # at least one renewal went through
    holed = time.monotonic()
    blackhole.black_hole()
    poll(lambda: fired, timeout=5)
    assert fired[0][0] - holed <= lease_ms / 1000 + SLACK_S, "no later than last renewal + lease"
    assert fired[0][1].startswith("distkit-on-lost-"), "never on the watchdog's renewal path"
    assert lock.lost
    t0 = time.monotonic()
    with pytest.raises(LockLostError):
        lock.release()
    assert time.monotonic() - t0 < 0.1, "a lost hold is dropped locally, without Redis"
    assert lock.hold_count == 0
    blackhole.close()  # unblock the watchdog's renewal socket; its client retries a while: close in the background
    threading.Thread(target=locks.close, daemon=True).start()


async def test_async_on_lost_fires_within_the_lease_when_black_holed(blackhole: BlackHoleProxy, namespace: str) -> None:
    lease_ms = 900
    client = aredis.Redis.from_url(blackhole.url)
    alocks = AsyncLocks(client, namespace=namespace, lease_ms=lease_ms)
    lock = alocks.lock("held")
    fired: list[float] = []
    lock.on_lost = lambda: fired.append(time.monotonic())
    await lock.acquire()
    await asyncio.sleep(lease_ms / 3000 + 0.1)
    holed = time.monotonic()
    blackhole.black_hole()
    deadline = time.monotonic() + 5
    while not fired and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert fired and fired[0] - holed <= lease_ms / 1000 + SLACK_S
    with pytest.raises(LockLostError):
        await asyncio.wait_for(lock.release(), 0.1)
    blackhole.close()
    await alocks.aclose()


def test_lost_hold_is_dropped_without_redis_after_a_kill(private_redis: Any, namespace: str) -> None:
    """Defect 8: the watchdog reported the loss during the outage; release() must not need Redis to drop it."""
    lease_ms = 600
    client = redis.Redis.from_url(private_redis.url)
    with Locks(client, namespace=namespace, lease_ms=lease_ms) as locks:
        lock = locks.lock("outage")
        fired: list[float] = []
        lock.on_lost = lambda: fired.append(time.monotonic())
        lock.acquire()
        private_redis.stop()
        stopped = time.monotonic()
        poll(lambda: fired, timeout=lease_ms / 1000 + 2)
        assert fired[0] - stopped <= lease_ms / 1000 + SLACK_S, "no later than the last renewal + the lease"
        assert lock.lost
        with pytest.raises(LockLostError):
            lock.acquire(blocking=False)
        t0 = time.monotonic()
        with pytest.raises(LockLostError):
            lock.release()
        assert time.monotonic() - t0 < 0.1
        assert lock.hold_count == 0
        private_redis.start()

        def usable() -> bool:  # once the outage breaker's back-off (at most 5 s) lets a probe through
            try:
                return lock.acquire(blocking=False)
            except BackendUnavailableError:
                return False

        poll(usable, timeout=6, interval=0.02)
        lock.release()
    client.close()


@pytest.mark.parametrize("fault", ["killed", "black-holed"])
def test_acquire_with_timeout_is_bounded_during_an_outage(
    private_redis: Any, blackhole: BlackHoleProxy, namespace: str, fault: str
) -> None:
    url = private_redis.url if fault == "killed" else blackhole.url
    client = redis.Redis.from_url(url)  # a default client
    locks = Locks(client, namespace=namespace, call_timeout_s=1.0)
    lock = locks.lock("bounded")
    assert lock.acquire(lease_ms=5_000)
    lock.release()
    held = locks.lock("held")
    held.acquire(lease_ms=5_000)
    if fault == "killed":
        private_redis.stop()
    else:
        blackhole.black_hole()
    need_bounded_runner(url)
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError):
        held.release()
    assert time.monotonic() - t0 <= 1.0 + SLACK_S
    assert held.hold_count == 1, "an unanswered release keeps the hold: retry it"
    for call, limit in (
        (lambda: lock.acquire(timeout=1), 1.0),
        (lambda: lock.acquire(blocking=False), 1.0),
        (lambda: lock.is_locked(), 1.0),
    ):
        took, outcome = timed(call, limit + SLACK_S)
        assert took <= limit + SLACK_S, f"took {took:.2f} s"
        assert isinstance(outcome, BackendUnavailableError) or outcome is False
    blackhole.close()
    locks.close()


@pytest.mark.parametrize("fault", ["killed", "black-holed"])
async def test_async_acquire_with_timeout_is_bounded_during_an_outage(
    private_redis: Any, blackhole: BlackHoleProxy, namespace: str, fault: str
) -> None:
    url = private_redis.url if fault == "killed" else blackhole.url
    client = aredis.Redis.from_url(url)
    alocks = AsyncLocks(client, namespace=namespace, call_timeout_s=1.0)
    lock = alocks.lock("bounded")
    assert await lock.acquire(lease_ms=5_000)
    await lock.release()
    if fault == "killed":
        private_redis.stop()
    else:
        blackhole.black_hole()
    need_bounded_runner(url)
    for make in (lambda: lock.acquire(timeout=1), lambda: lock.acquire(blocking=False), lambda: lock.is_locked()):
        t0 = time.monotonic()
        try:
            outcome = await asyncio.wait_for(make(), 1.0 + 5)
        except BackendUnavailableError as exc:
            outcome = exc
        took = time.monotonic() - t0
        assert took <= 1.0 + SLACK_S, f"took {took:.2f} s"
        assert isinstance(outcome, BackendUnavailableError) or outcome is False
    blackhole.close()
    await alocks.aclose()


def test_a_waiter_never_waits_for_the_pubsub_connect_past_its_deadline() -> None:
    """Issue 13: the first SUBSCRIBE of a new pub/sub connection used to connect on the caller's thread, under
    the hub's lock, with the client's own retries and no socket timeout: against a server that accepts and never
    answers, the caller (and every other waiter behind the lock) blocked for good. The listener connects now;
    the caller waits for its confirmation only until its deadline, then re-checks by polling."""
    from distkit.locks.waiters import Hub
    from tests.faults import BlackHole

    hole = BlackHole()
    client = redis.Redis.from_url(hole.url)  # default client: retries with backoff, no socket timeout
    hub = Hub(client, "test-hub-blackhole", linger_s=0.1)
    try:
        for _ in range(2):  # the second caller must not queue behind the first one's connect either
            took, waiter = timed(lambda: hub.subscribe("ch", "holder", deadline=time.monotonic() + 0.5), 0.5)
            assert took <= 0.5 + SLACK_S
            assert not isinstance(waiter, BaseException), waiter
            hub.unsubscribe(waiter)
        assert hole.accepted  # the listener did try to connect
    finally:
        hub.close()
        hole.close()
        client.close()


async def test_an_async_waiter_never_waits_for_the_pubsub_connect_past_its_deadline() -> None:
    from distkit.locks.waiters import AsyncHub
    from tests.faults import BlackHole

    hole = BlackHole()
    client = aredis.Redis.from_url(hole.url)
    hub = AsyncHub(client, "test-ahub-blackhole", linger_s=0.1)
    try:
        for _ in range(2):
            t0 = time.monotonic()
            waiter = await asyncio.wait_for(hub.subscribe("ch", "holder", deadline=time.monotonic() + 0.5), 5)
            assert time.monotonic() - t0 <= 0.5 + SLACK_S
            await hub.unsubscribe(waiter)
    finally:
        task = hub.task
        if task is not None:
            task.cancel()
        hole.close()
        await client.aclose()
