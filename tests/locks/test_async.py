"""AsyncLocks: the same behaviour with asyncio tasks as owners, on Redis and Redis Cluster."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from distkit._redis import key
from distkit.errors import LockLostError, LockNotOwnedError, LockTimeoutError, LockUpgradeError
from distkit.locks import AsyncLocks
from tests.locks.conftest import akeys_of


async def apoll(predicate: Any, timeout: float = 10.0, interval: float = 0.005) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic()
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


async def test_sixteen_tasks_increment_a_shared_counter_exactly(alocks: AsyncLocks, aclient: Any) -> None:
    counter = key(alocks.namespace, "counter", "value")
    lock = alocks.lock("counter")

    async def worker() -> None:
        for _ in range(100):
            async with lock:
                value = int(await aclient.get(counter) or 0)
                await asyncio.sleep(0.0005)
                await aclient.set(counter, value + 1, px=60_000)

    await asyncio.gather(*(worker() for _ in range(16)))
    assert int(await aclient.get(counter)) == 1600
    assert alocks.hub.waiting == 0
    await apoll(lambda: not alocks.hub.subscribed_channels, timeout=5)  # dropped after linger_s unused


async def test_reentrancy_is_per_task(alocks: AsyncLocks) -> None:
    lock = alocks.lock("task-owned")
    for n in (1, 2, 3):
        assert await lock.acquire()
        assert lock.hold_count == n

    async def other() -> Any:
        assert lock.hold_count == 0
        assert await lock.acquire(blocking=False) is False
        with pytest.raises(LockNotOwnedError):
            await lock.release()
        return await lock.is_held_by_current()

    assert await asyncio.create_task(other()) is False
    for _ in range(3):
        assert await lock.is_locked()
        await lock.release()
    assert not await lock.is_locked()


async def test_cancelled_waiter_leaves_no_queue_entry_and_no_subscription(
    alocks: AsyncLocks, aclient: Any, namespace: str
) -> None:
    fair = alocks.fair_lock("cancel-me")
    await fair.acquire()

    async def other_task() -> bool:  # a task of its own: acquire() takes the owner where it is called
        return await fair.acquire()

    waiter = asyncio.create_task(other_task())
    queue = key(namespace, "cancel-me", "queue")
    await apoll(lambda: aclient.llen(queue))
    await apoll(lambda: alocks.hub.subscribed_channels == {fair._spec.channel})  # queued first, then subscribed
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await aclient.llen(queue) == 0
    assert await aclient.zcard(key(namespace, "cancel-me", "queue-ttl")) == 0
    assert alocks.hub.waiting == 0
    await apoll(lambda: not alocks.hub.subscribed_channels, timeout=5)
    assert fair.hold_count == 1
    await fair.release()
    assert await akeys_of(aclient, namespace) == []


async def test_timeout_and_guard(alocks: AsyncLocks) -> None:
    lock = alocks.lock("busy")
    await lock.acquire()

    async def contender() -> None:
        t0 = time.monotonic()
        assert await lock.acquire(timeout=0.2) is False
        assert time.monotonic() - t0 >= 0.19
        with pytest.raises(LockTimeoutError):
            async with lock(timeout=0.05):
                pass

    await asyncio.create_task(contender())
    await lock.release()
    async with lock(timeout=1) as held:
        assert held.hold_count == 1


async def test_watchdog_task_renews_and_stops_when_owner_task_ends(aclient: Any, namespace: str) -> None:
    lease_ms = 900
    async with AsyncLocks(aclient, namespace=namespace, lease_ms=lease_ms) as alocks:
        lock = alocks.lock("renewed")

        async def take_and_leave() -> None:
            await lock.acquire()

        await asyncio.create_task(take_and_leave())  # the owner task ends without releasing
        ended = time.monotonic()
        lock_key = key(namespace, "renewed")
        assert await aclient.exists(lock_key)
        gone = await apoll(lambda: _absent(aclient, lock_key), timeout=5, interval=0.002)
        assert gone - ended <= (lease_ms + lease_ms / 3) / 1000 + 0.15

        held = alocks.lock("held")
        await held.acquire()
        await asyncio.sleep(lease_ms * 2 / 1000)
        assert await held.is_held_by_current(), "renewed while its task lives"
        await held.release()
        assert alocks.watchdog.task is not None and not alocks.watchdog.task.done()
    assert alocks.watchdog.task is None


async def _absent(client: Any, k: str) -> bool:
    return not await client.exists(k)


async def test_on_lost_fires_when_key_deleted(aclient: Any, namespace: str) -> None:
    async with AsyncLocks(aclient, namespace=namespace, lease_ms=600) as alocks:
        lock = alocks.lock("deleted")
        fired: list[float] = []

        async def on_lost() -> None:
            fired.append(time.monotonic())

        lock.on_lost = on_lost
        await lock.acquire()
        await aclient.delete(key(namespace, "deleted"))
        deleted = time.monotonic()
        await apoll(lambda: fired, timeout=5)
        assert fired[0] - deleted <= 0.2 + 0.15
        with pytest.raises(LockLostError):
            await lock.release()


async def test_rw_lock_and_semaphore_async(alocks: AsyncLocks) -> None:
    rw = alocks.rw_lock("doc")
    async with rw.read_lock():
        with pytest.raises(LockUpgradeError):
            await rw.write_lock().acquire()

        async def reader() -> bool:
            async with rw.read_lock():
                return await rw.read_lock().is_locked()

        assert await asyncio.create_task(reader())
    async with rw.write_lock(), rw.read_lock():  # downgrade
        async def try_read() -> bool:
            return await rw.read_lock().acquire(blocking=False)

        assert await asyncio.create_task(try_read()) is False

    sem = alocks.semaphore("pool", permits=2, lease_ms=5_000)
    a, b = await sem.acquire(), await sem.acquire()
    assert a and b and await sem.acquire(blocking=False) is None
    assert await sem.available_permits() == 0
    await sem.release(a)
    async with sem as permit:
        assert permit and await sem.available_permits() == 0
    await sem.release(b)
    assert await sem.available_permits() == 2


async def test_ten_thousand_cycles_leave_no_keys_and_one_watchdog_task(
    alocks: AsyncLocks, aclient: Any, namespace: str
) -> None:
    lock = alocks.lock("churn")
    for _ in range(10_000):
        await lock.acquire()
        await lock.release()
    assert await akeys_of(aclient, namespace) == []
    names = {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("distkit-")}
    assert names == {f"distkit-watchdog-{namespace}"}


async def test_cancellation_at_any_point_leaves_nothing_behind(
    alocks: AsyncLocks, aclient: Any, namespace: str
) -> None:
    """Cancel a waiter at staggered moments around the holder's release (while subscribing, while a script
    call is in flight, while waiting): afterwards the lock is free or held by the waiter that won, and no
    subscription or queue place is left."""
    fair = alocks.fair_lock("chaos")
    outcomes = {"acquired": 0, "cancelled": 0}
    for i in range(40):
        await fair.acquire()

        async def contender() -> bool:
            return await fair.acquire()

        waiter = asyncio.create_task(contender())
        await asyncio.sleep((i % 8) * 0.0004)
        if i % 3 == 0:  # cancelled while the lock is still held
            waiter.cancel()
            await fair.release()
        else:  # cancelled around the wake-up: the attempt may be in flight or just granted
            await fair.release()
            await asyncio.sleep((i % 5) * 0.0003)
            waiter.cancel()
        try:
            await waiter
        except asyncio.CancelledError:
            outcomes["cancelled"] += 1
            assert not await fair.is_locked(), "a cancelled attempt that took the lock was undone"
        else:
            outcomes["acquired"] += 1
            assert await fair.is_locked()
            # the finished waiter task owns it and cannot release any more: clean up by hand
            await aclient.delete(key(namespace, "chaos"))
            alocks.holds.clear()
    assert outcomes["cancelled"] > 0
    await apoll(lambda: alocks.hub.waiting == 0, timeout=5)
    await apoll(lambda: not alocks.hub.subscribed_channels, timeout=5)
    assert await aclient.llen(key(namespace, "chaos", "queue")) == 0
    assert await akeys_of(aclient, namespace) == []
