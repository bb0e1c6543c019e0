"""The Redisson API issue 13 asked for: force_unlock, remaining_lease_ms, is_held_by, extend, try_release,
semaphore permits / drain / add_permits / available, MultiLock, decorators, lease_s."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from distkit.errors import InvalidArgumentError, LockLostError, LockNotOwnedError, LockTimeoutError
from distkit.locks import AsyncLocks, Locks
from tests.locks.conftest import keys_of
from tests.locks.test_lock import run_in_thread


def test_force_unlock_remaining_lease_is_held_by(locks: Locks) -> None:
    lock = locks.lock("admin")
    assert lock.remaining_lease_ms() is None and lock.force_unlock() is False
    lock.acquire(lease_s=5)
    assert 4_000 < (lock.remaining_lease_ms() or 0) <= 5_000
    me = locks.holder()
    assert lock.is_held_by(me)
    assert run_in_thread(lambda: lock.is_held_by(me)), "asked from another thread about this one"
    assert not run_in_thread(lambda: lock.is_held_by(locks.holder()))
    assert run_in_thread(lock.force_unlock) is True
    assert not lock.is_locked()
    with pytest.raises(LockLostError):  # freed under us: nothing left to extend
        lock.extend(lease_ms=5_000)
    assert lock.try_release() is False and lock.hold_count == 0


def test_extend_and_try_release(locks: Locks, client: Any) -> None:
    lock = locks.lock("extend")
    with pytest.raises(LockNotOwnedError):
        lock.extend(lease_ms=1_000)
    with pytest.raises(InvalidArgumentError, match="lease_ms or lease_s"):
        lock.extend()
    lock.acquire(lease_ms=300)
    lock.extend(lease_s=10)
    time.sleep(0.4)
    assert lock.is_held_by_current() and 9_000 < (lock.remaining_lease_ms() or 0) <= 10_000
    assert run_in_thread(lock.try_release) is False, "not the owner: False, no exception"
    assert lock.try_release() is True
    assert lock.try_release() is False
    assert keys_of(client, locks.namespace) == []


def test_semaphore_many_permits_drain_add_and_available_across_factories(locks: Locks, client: Any) -> None:
    sem = locks.semaphore("pool", permits=5, lease_ms=10_000)
    with Locks(client, namespace=locks.namespace) as elsewhere:
        peer = elsewhere.semaphore("pool", permits=5, lease_ms=10_000)
        three = sem.acquire(3)
        assert three is not None
        assert sem.available() == peer.available() == 2
        assert peer.acquire(blocking=False, permits=3) is None, "3 of 2 free: all or nothing"
        two = peer.acquire(permits=2)
        assert two is not None and sem.available() == 0
        sem.release(three, permits=1)  # give one of the three back
        assert peer.available() == 1
        sem.release(three)  # and the other two
        assert peer.available() == 3
        assert sem.drain() == 3 and peer.available() == 0
        assert sem.acquire(blocking=False) is None
        peer.release(two)
        assert sem.available() == 2, "permits out at the drain come back when released"
        assert peer.add_permits(4) == 6 and sem.available() == 6
        assert sem.add_permits(-6) == 0
        with pytest.raises(InvalidArgumentError, match="cannot remove"):
            sem.add_permits(-1)
        sem.add_permits(5)
    with pytest.raises(InvalidArgumentError, match="only 5"):
        locks.semaphore("tiny", permits=5).acquire(6)
    for key in keys_of(client, locks.namespace):
        assert client.pttl(key) > 0, "every key has a TTL"


def test_multilock_is_all_or_nothing(locks: Locks) -> None:
    multi = locks.multi_lock("b", "a", locks.lock("c"))
    assert multi.names == ["a", "b", "c"], "one global order, whatever the caller's"
    blocker = locks.lock("c")
    run_in_thread(lambda: blocker.acquire(lease_ms=5_000))
    assert multi.acquire(timeout=0.2) is False
    assert not locks.lock("a").is_locked() and not locks.lock("b").is_locked(), "none held after a failure"
    locks.lock("c").force_unlock()
    with multi:
        assert all(lock.hold_count == 1 for lock in multi.locks)
    assert not any(lock.is_locked() for lock in multi.locks)


def test_multilock_opposite_orders_never_deadlock(locks: Locks) -> None:
    one, two = locks.multi_lock("x", "y"), locks.multi_lock("y", "x")
    counts = {"one": 0, "two": 0}

    def run(multi: Any, who: str) -> None:
        for _ in range(25):
            with multi(timeout=10):
                counts[who] += 1

    threads = [threading.Thread(target=run, args=(one, "one")), threading.Thread(target=run, args=(two, "two"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert counts == {"one": 25, "two": 25}


def test_lock_as_decorator(locks: Locks) -> None:
    lock = locks.lock("deco")

    @locks.lock("deco")
    def guarded(x: int) -> int:
        assert lock.hold_count == 1
        return x * 2

    @lock(timeout=1, lease_s=5)
    def with_timeout() -> int:
        return lock.hold_count

    assert guarded(21) == 42 and with_timeout() == 1
    assert guarded.__name__ == "guarded" and lock.hold_count == 0
    run_in_thread(lambda: lock.acquire(lease_ms=5_000))
    with pytest.raises(LockTimeoutError):
        with_timeout()
    lock.force_unlock()


async def test_async_api(alocks: AsyncLocks) -> None:
    lock = alocks.lock("deco")

    @alocks.lock("deco")
    async def guarded() -> int:
        return lock.hold_count

    assert await guarded() == 1
    with pytest.raises(InvalidArgumentError, match="async def"):
        lock(lambda: None)
    await lock.acquire(lease_s=5)
    assert await lock.is_held_by(alocks.holder())
    await lock.extend(lease_ms=8_000)
    assert 7_000 < (await lock.remaining_lease_ms() or 0) <= 8_000
    assert await lock.try_release() and not await lock.try_release()
    sem = alocks.semaphore("p", permits=3, lease_ms=5_000)
    permit = await sem.acquire(2)
    assert permit and await sem.available() == 1
    assert await sem.drain() == 1 and await sem.add_permits(1) == 3
    await sem.release(permit)
    multi = alocks.multi_lock("m1", "m2")
    assert await asyncio.wait_for(multi.acquire(), 2), "owner is the caller, also through wait_for"
    assert alocks.lock("m1").hold_count == 1
    await multi.release()
    assert not await alocks.lock("m2").is_locked()


def test_lease_s_and_lease_ms_are_one_lease(locks: Locks, client: Any) -> None:
    lock = locks.lock("units")
    lock.acquire(lease_s=0.5)
    assert 0 < (lock.remaining_lease_ms() or 0) <= 500
    lock.release()
    lock.acquire(timeout=1, lease_ms=2_000)  # today's spelling keeps working
    assert 1_000 < (lock.remaining_lease_ms() or 0) <= 2_000
    lock.release()
    with pytest.raises(InvalidArgumentError, match="lease_s"):
        lock.acquire(lease_s=-1)
    with pytest.raises(InvalidArgumentError, match="not both"):
        Locks(client, namespace="x", lease_ms=1_000, lease_s=1)
    with Locks(client, namespace=locks.namespace, lease_s=2) as two:
        assert two.lease_ms == 2_000
