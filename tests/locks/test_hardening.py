"""Regression tests for issue 13 (defects 1-9), on Redis and Redis Cluster (``backend`` parameter)."""

from __future__ import annotations

import _thread
import asyncio
import threading
import time
from typing import Any

import pytest

from distkit.errors import (
    InvalidArgumentError,
    LockConfigConflictError,
    LockLostError,
    LocksClosedError,
)
from distkit.locks import AsyncLocks, Locks
from distkit.locks.specs import object_key
from tests.locks.test_lock import poll, run_in_thread


async def apoll(predicate: Any, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met within {timeout}s")


# ------------------------------------------------------------------ 1. a lost lock is never released silently


@pytest.mark.parametrize("lease_ms", [10_000, None], ids=["fixed-lease", "watchdog"])
def test_release_after_loss_to_another_owner_raises_and_fires_on_lost_once(
    locks: Locks, client: Any, lease_ms: int | None
) -> None:
    lock = locks.lock("stolen")
    fired: list[str] = []
    lock.on_lost = lambda: fired.append(threading.current_thread().name)
    lock.acquire(lease_ms=lease_ms)
    client.delete(object_key(locks.namespace, "stolen"))
    with Locks(client, namespace=locks.namespace) as other:
        thief = other.lock("stolen")
        assert thief.acquire(blocking=False)
        with pytest.raises(LockLostError, match="another owner"):
            lock.release()
        assert lock.hold_count == 0
        poll(lambda: fired, timeout=5)
        time.sleep(0.05)
        assert len(fired) == 1 and fired[0].startswith("distkit-on-lost-")
        assert thief.is_held_by_current(), "the other owner's lock is untouched"
        thief.release()
    assert lock.acquire(blocking=False), "after the LockLostError the lock can be taken afresh"
    lock.release()


def test_write_lock_released_after_loss_to_another_writer_raises(locks: Locks, client: Any) -> None:
    rw = locks.rw_lock("doc")
    rw.write_lock().acquire()
    for suffix in (None, "holds"):
        client.delete(object_key(locks.namespace, "doc", suffix))
    with Locks(client, namespace=locks.namespace) as other:
        assert other.rw_lock("doc").write_lock().acquire(blocking=False)
        with pytest.raises(LockLostError, match="another owner"):
            rw.write_lock().release()
        other.rw_lock("doc").write_lock().release()


async def test_async_release_after_loss_to_another_owner_raises(alocks: AsyncLocks, aclient: Any) -> None:
    lock = alocks.lock("stolen")
    fired: list[int] = []

    async def on_lost() -> None:
        fired.append(1)

    lock.on_lost = on_lost
    await lock.acquire()
    await aclient.delete(object_key(alocks.namespace, "stolen"))
    async with AsyncLocks(aclient, namespace=alocks.namespace) as other:
        thief = other.lock("stolen")
        assert await thief.acquire(blocking=False)
        with pytest.raises(LockLostError, match="another owner"):
            await lock.release()
        await apoll(lambda: fired)
        assert len(fired) == 1
        await thief.release()


def test_reply_lost_release_then_another_owner_is_not_an_error(locks: Locks, client: Any) -> None:
    """The benign case the check must keep: our release freed the lock, its reply was lost, another owner took
    the lock after that; the retried release sees the other owner with a token later than its start."""
    lock = locks.lock("handover")
    lock.acquire()
    hold = locks.holds.get(lock._spec.hold_key, locks.holder())
    assert hold is not None
    hold.release_started = time.monotonic()  # a first attempt that failed with an outage
    time.sleep(0.2)  # ... and took a while (the retry's own latency shortens the benefit of the doubt)
    call = lock._spec.release_call(locks.holder(), hold.token, 1)
    call.script(client, call.keys, call.args)  # it ran on the server
    with Locks(client, namespace=locks.namespace) as other:
        assert other.lock("handover").acquire(blocking=False)
        lock.release()  # the retry: no error
        assert lock.hold_count == 0
        other.lock("handover").release()


# ------------------------------------------------------------------ 2. asyncio ownership survives wrapping tasks


async def test_wait_for_gather_shield_give_the_lock_to_the_caller(aclient: Any, namespace: str) -> None:
    async with AsyncLocks(aclient, namespace=namespace, lease_ms=900) as alocks:
        lock = alocks.lock("wrapped")
        assert await asyncio.wait_for(lock.acquire(), 2)
        assert lock.hold_count == 1, "the caller of wait_for owns the lock"
        (ok,) = await asyncio.gather(lock.acquire())
        assert ok and lock.hold_count == 2
        assert await asyncio.shield(lock.acquire()) and lock.hold_count == 3
        await asyncio.sleep(1.5)  # past the lease: only the watchdog (renewing for this live task) keeps it
        assert await lock.is_held_by_current() and not lock.lost
        for _ in range(3):
            await asyncio.wait_for(lock.release(), 2)
        assert not await lock.is_locked()

        async def other_task() -> bool:
            return await lock.acquire(blocking=False)

        await lock.acquire()
        assert await asyncio.create_task(other_task()) is False, "another task is another owner"
        await lock.release()


async def test_two_concurrent_acquires_of_one_task_are_refused_not_double_counted(alocks: AsyncLocks) -> None:
    lock = alocks.lock("gathered")
    results = await asyncio.gather(lock.acquire(), lock.acquire(), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["LockError", "bool"]
    assert any(r is True for r in results) and lock.hold_count == 1  # one of the concurrent acquires won
    await lock.release()
    assert not await lock.is_locked()


# ------------------------------------------------------------------ 3. slow on_lost never stalls the watchdog


def test_slow_on_lost_does_not_stall_renewals(client: Any, namespace: str) -> None:
    with Locks(client, namespace=namespace, lease_ms=900) as locks:
        doomed, healthy = locks.lock("doomed"), locks.lock("healthy")
        started = threading.Event()

        def slow() -> None:
            started.set()
            time.sleep(3.0)

        doomed.on_lost = slow
        healthy_lost: list[int] = []
        healthy.on_lost = lambda: healthy_lost.append(1)
        doomed.acquire()
        healthy.acquire()
        client.delete(object_key(namespace, "doomed"))
        assert started.wait(3)
        time.sleep(1.5)  # more than a healthy lease while the callback sleeps
        assert healthy.is_held_by_current() and not healthy_lost
        healthy.release()


def test_a_mass_loss_runs_every_callback_once_on_a_few_threads(client: Any, namespace: str) -> None:
    with Locks(client, namespace=namespace, lease_ms=3_000) as locks:
        fired: list[str] = []
        threads_seen: list[int] = []
        guard = threading.Lock()
        views = [locks.lock(f"m{i}") for i in range(24)]
        for view in views:

            def on_lost(name: str = view.name) -> None:
                time.sleep(0.02)
                with guard:
                    fired.append(name)
                    threads_seen.append(
                        sum(t.name == f"distkit-on-lost-{namespace}" for t in threading.enumerate())
                    )

            view.on_lost = on_lost
            view.acquire()
        client.delete(*[object_key(namespace, view.name) for view in views])
        poll(lambda: len(fired) == 24, timeout=10)
        time.sleep(0.1)
        assert sorted(fired) == sorted(v.name for v in views), "each exactly once"
        assert max(threads_seen) <= 4


@pytest.mark.parametrize("kind", ["async-def", "blocking-def"])
async def test_slow_on_lost_does_not_stall_the_async_watchdog(aclient: Any, namespace: str, kind: str) -> None:
    async with AsyncLocks(aclient, namespace=namespace, lease_ms=900) as alocks:
        doomed, healthy = alocks.lock("doomed"), alocks.lock("healthy")
        called: list[float] = []

        async def slow_async() -> None:
            called.append(time.monotonic())
            await asyncio.sleep(3.0)

        def slow_blocking() -> None:
            called.append(time.monotonic())
            time.sleep(3.0)

        doomed.on_lost = slow_async if kind == "async-def" else slow_blocking
        await doomed.acquire()
        await healthy.acquire()
        await aclient.delete(object_key(namespace, "doomed"))
        await apoll(lambda: called, timeout=3)
        await asyncio.sleep(1.5)
        assert await healthy.is_held_by_current() and not healthy.lost
        await healthy.release()


# ------------------------------------------------------------------ 4. threads not started through threading


def test_lock_of_a_raw_thread_expires_after_the_thread_ends(client: Any, namespace: str) -> None:
    lease_ms = 600
    with Locks(client, namespace=namespace, lease_ms=lease_ms) as locks:
        lock = locks.lock("raw")
        done = threading.Event()
        out: list[bool] = []

        def body() -> None:
            out.append(lock.acquire())
            done.set()

        _thread.start_new_thread(body, ())
        assert done.wait(5) and out == [True]
        ended = time.monotonic()
        gone = poll(lambda: not client.exists(object_key(namespace, "raw")), timeout=5, interval=0.01)
        assert gone - ended <= (lease_ms + lease_ms / 3) / 1000 + 0.5, "no renewal after the thread ended"


# ------------------------------------------------------------------ 5. configuration lives with the object


def test_semaphore_permits_conflict_is_refused(client: Any, namespace: str) -> None:
    with Locks(client, namespace=namespace) as a, Locks(client, namespace=namespace) as b:
        small, big = a.semaphore("pool", permits=2, lease_ms=10_000), b.semaphore("pool", permits=5, lease_ms=10_000)
        permits = [small.acquire(), small.acquire()]
        with pytest.raises(LockConfigConflictError, match="s:2"):
            big.acquire(blocking=False)
        assert big.permits == 5 and small.available() == 0
        for p in permits:
            assert p is not None
            small.release(p)
        rw_a, rw_b = a.rw_lock("doc", prefer_writers=True), b.rw_lock("doc", prefer_writers=False)
        with rw_a.read_lock():
            with pytest.raises(LockConfigConflictError, match="prefer"):
                run_in_thread(lambda: rw_b.read_lock().acquire(blocking=False))


# ------------------------------------------------------------------ 6. re-entry without a lease starts renewal


def test_reentry_without_lease_starts_the_watchdog(client: Any, namespace: str) -> None:
    with Locks(client, namespace=namespace, lease_ms=900) as locks:
        lock = locks.lock("mixed")
        lock.acquire(lease_ms=400)
        lock.acquire()  # watchdog from now on
        time.sleep(1.0)  # well past the first lease
        assert lock.hold_count == 2 and lock.is_held_by_current() and not lock.lost
        lock.release()
        lock.release()
        assert not lock.is_locked()


# ------------------------------------------------------------------ 7. close() fails blocked acquires


def test_close_fails_a_blocked_acquire_and_grants_nothing(client: Any, namespace: str) -> None:
    holder = Locks(client, namespace=namespace)
    closing = Locks(client, namespace=namespace)
    held = holder.lock("busy")
    held.acquire(lease_ms=10_000)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            closing.lock("busy").acquire(timeout=20)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    poll(lambda: closing.hub.waiting == 1)
    t0 = time.monotonic()
    closing.close()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 3
    assert len(errors) == 1 and isinstance(errors[0], LocksClosedError)
    held.release()
    time.sleep(0.1)
    assert not held.is_locked(), "nothing was granted to the closed factory"
    with pytest.raises(LocksClosedError):
        closing.lock("busy").acquire()
    holder.close()


async def test_aclose_fails_a_blocked_acquire(aclient: Any, namespace: str) -> None:
    holder, closing = AsyncLocks(aclient, namespace=namespace), AsyncLocks(aclient, namespace=namespace)
    held = holder.lock("busy")
    await held.acquire(lease_ms=10_000)

    async def wait() -> bool:
        return await closing.lock("busy").acquire(timeout=20)

    task = asyncio.create_task(wait())
    await apoll(lambda: closing.hub.waiting == 1)
    await closing.aclose()
    with pytest.raises(LocksClosedError):
        await asyncio.wait_for(task, 3)
    await held.release()
    assert not await held.is_locked()
    await holder.aclose()


# ------------------------------------------------------------------ 9. input gaps and key ambiguity


def test_bad_inputs_raise_typed_errors(locks: Locks, client: Any) -> None:
    lock = locks.lock("inputs")
    with pytest.raises(InvalidArgumentError, match="lease_ms"):
        lock.acquire(lease_ms=10**20)
    with pytest.raises(InvalidArgumentError, match="lone surrogates"):
        locks.lock("bad\udc80name")
    with pytest.raises(InvalidArgumentError, match="lone surrogates"):
        Locks(client, namespace="ns\ud800")
    sem = locks.semaphore("sem", permits=1)
    with pytest.raises(InvalidArgumentError, match="permit id"):
        sem.release(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="not both"):
        lock.acquire(lease_ms=1_000, lease_s=1.0)
    with pytest.raises(InvalidArgumentError, match="blocking"):
        lock.acquire(blocking="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("first", ["lock", "rw_lock"])
def test_same_name_for_lock_and_rw_lock_is_a_typed_error(locks: Locks, first: str) -> None:
    lock, rw = locks.lock("both"), locks.rw_lock("both")
    if first == "lock":
        lock.acquire(lease_ms=5_000)
        with pytest.raises(LockConfigConflictError, match="another kind"):
            rw.read_lock().acquire(blocking=False)
        lock.release()
    else:
        rw.write_lock().acquire(lease_ms=5_000)
        with pytest.raises(LockConfigConflictError, match="another kind"):
            lock.acquire(blocking=False)
        rw.write_lock().release()


def test_namespace_and_name_separator_is_not_ambiguous(client: Any, namespace: str) -> None:
    with Locks(client, namespace=f"{namespace}:b") as one, Locks(client, namespace=namespace) as two:
        a, b = one.lock("c"), two.lock("b:c")
        assert a._spec.keys[0] != b._spec.keys[0]
        assert a.acquire(blocking=False)
        assert run_in_thread(lambda: b.acquire(blocking=False) and (b.release() or True))
        a.release()
    assert object_key("a", "x}y{") == "{a:x%7Dy%7B}", "braces cannot break the hash tag"
    assert object_key("a%3Ab", "c") != object_key("a:b", "c")


def test_async_calls_made_outside_a_task_belong_to_the_task_that_runs_them(redis_url: str, namespace: str) -> None:
    import redis.asyncio as aredis

    async def scenario() -> None:
        client = aredis.Redis.from_url(redis_url)
        async with AsyncLocks(client, namespace=namespace) as alocks:
            lock = alocks.lock("outside")

            async def inner() -> bool:
                ok = await lock.acquire(lease_ms=5_000)
                await lock.release()
                return ok

            assert await inner()
        await client.aclose()

    loop = asyncio.new_event_loop()
    try:
        client = aredis.Redis.from_url(redis_url)
        alocks = AsyncLocks(client, namespace=namespace)
        lock = alocks.lock("outside")
        coro = lock.acquire(lease_ms=5_000)  # made with no task around: owned by the task run_until_complete makes
        assert loop.run_until_complete(coro) is True
        assert loop.run_until_complete(lock.is_locked())
        assert loop.run_until_complete(lock.force_unlock())
        loop.run_until_complete(alocks.aclose())
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(scenario())
    finally:
        loop.close()


def test_two_processes_with_different_permit_counts_never_exceed_the_stored_one(
    backend: str, client: Any, namespace: str
) -> None:
    import multiprocessing

    from tests.locks import _workers

    spawn = multiprocessing.get_context("spawn")
    with Locks(client, namespace=namespace) as locks:
        sem = locks.semaphore("pool", permits=2, lease_ms=10_000)
        mine = [sem.acquire(), sem.acquire()]
        out = spawn.Queue()
        for permits, expected in ((5, ("LockConfigConflictError", 0, -1)), (2, ("taken", 0, 0))):
            proc = spawn.Process(target=_workers.take_permits, args=(backend, namespace, permits, out))
            proc.start()
            assert out.get(timeout=60) == expected
            proc.join(30)
        for permit in mine:
            assert permit is not None
            sem.release(permit)
