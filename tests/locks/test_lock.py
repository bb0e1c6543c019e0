"""Exclusive reentrant lock against real Redis and the 3-master Redis Cluster (``backend`` parameter)."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import time
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from distkit._redis import key
from distkit.errors import (
    BackendUnavailableError,
    InvalidArgumentError,
    LockLostError,
    LockNotOwnedError,
    LockTimeoutError,
)
from distkit.locks import Locks
from tests.locks import _workers
from tests.locks.conftest import keys_of

SPAWN = multiprocessing.get_context("spawn")


def run_in_thread(fn: Any) -> Any:
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=body)
    t.start()
    t.join(30)
    assert not t.is_alive()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def poll(predicate: Any, timeout: float = 10.0, interval: float = 0.005) -> float:
    """Wait until ``predicate()``; returns the monotonic time it first held. Fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def test_reentrant_acquire_three_times_frees_only_after_third_release(locks: Locks, client: Any) -> None:
    lock = locks.lock("order:42")
    tokens = []
    for expected in (1, 2, 3):
        assert lock.acquire()
        assert lock.hold_count == expected
        tokens.append(lock.fencing_token)
    assert len(set(tokens)) == 1, "a reentrant hold keeps its token"
    owner, count, token = client.get(key(locks.namespace, "order:42")).split()
    assert (owner.decode(), int(count), int(token)) == (locks.holder(), 3, tokens[0])
    for left in (2, 1):
        lock.release()
        assert lock.hold_count == left
        assert lock.is_locked() and lock.is_held_by_current()
        assert run_in_thread(lambda: lock.acquire(blocking=False)) is False
    lock.release()
    assert lock.hold_count == 0
    assert not lock.is_locked()
    assert run_in_thread(lambda: (lock.acquire(blocking=False), lock.release())[0]) is True


def test_two_views_of_one_name_share_reentrancy(locks: Locks) -> None:
    a, b = locks.lock("same"), locks.lock("same")
    with a, b:
        assert a.hold_count == b.hold_count == 2
    assert not a.is_locked()


def test_non_owner_thread_release_raises_lock_not_owned(locks: Locks) -> None:
    lock = locks.lock("owned")
    lock.acquire()
    with pytest.raises(LockNotOwnedError, match="only the thread or task that acquired it"):
        run_in_thread(lock.release)
    assert lock.is_held_by_current()
    assert run_in_thread(lock.is_held_by_current) is False
    lock.release()
    with pytest.raises(LockNotOwnedError):
        lock.release()
    with pytest.raises(LockNotOwnedError):
        _ = lock.fencing_token


def test_try_lock_and_timeout(locks: Locks, client: Any) -> None:
    lock = locks.lock("busy")
    lock.acquire()
    assert run_in_thread(lambda: lock.acquire(blocking=False)) is False
    t0 = time.monotonic()
    assert run_in_thread(lambda: lock.acquire(timeout=0.3)) is False
    assert 0.29 <= time.monotonic() - t0 < 2.0

    def guarded() -> None:
        with lock(timeout=0.1):
            pass

    with pytest.raises(LockTimeoutError, match=r"not acquired within 0\.1 s"):
        run_in_thread(guarded)
    lock.release()
    assert locks.hub.waiting == 0, "timed-out waiters leave the hub"
    poll(lambda: not locks.hub.subscribed_channels, timeout=5)  # and their channel goes after linger_s
    if not hasattr(client, "get_nodes"):
        assert client.pubsub_numsub(lock._spec.channel)[0][1] == 0


def test_bad_arguments_raise_typed_errors(locks: Locks, client: Any) -> None:
    lock = locks.lock("args")
    with pytest.raises(InvalidArgumentError, match="timeout must be >= 0"):
        lock.acquire(timeout=-1)
    with pytest.raises(InvalidArgumentError, match="needs blocking=True"):
        lock.acquire(blocking=False, timeout=1)
    with pytest.raises(InvalidArgumentError, match="lease_ms must be a positive int"):
        lock.acquire(lease_ms=0)
    with pytest.raises(InvalidArgumentError, match="non-empty str"):
        locks.lock("")
    with pytest.raises(InvalidArgumentError, match="lease_ms must be a positive"):
        Locks(client, namespace="x", lease_ms=-5)
    with pytest.raises(InvalidArgumentError, match="namespace"):
        Locks(client, namespace="")
    with pytest.raises(InvalidArgumentError, match="linger_s"):
        Locks(client, namespace="x", linger_s=-1)


def test_release_woken_waiter_by_pubsub_not_by_lease(locks: Locks) -> None:
    """The waiter's bounded re-check is the 3 s lease; a handoff far below it proves the pub/sub wake-up."""
    lock = locks.lock("handoff")
    lock.acquire()
    got: list[float] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        with lock:
            got.append(time.monotonic())

    t = threading.Thread(target=waiter)
    t.start()
    waiting.wait()
    poll(lambda: locks.hub.waiting == 1)
    time.sleep(0.05)
    released = time.monotonic()
    lock.release()
    t.join(5)
    assert got and got[0] - released < 0.5


def test_sixteen_processes_increment_a_shared_counter_exactly(backend: str, client: Any, namespace: str) -> None:
    start = SPAWN.Event()
    procs = [SPAWN.Process(target=_workers.count_under_lock, args=(backend, namespace, 100, start)) for _ in range(16)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert int(client.get(key(namespace, "counter", "value"))) == 1600


def test_fencing_tokens_strictly_increase_across_competing_processes(backend: str, client: Any, namespace: str) -> None:
    start, out = SPAWN.Event(), SPAWN.Queue()
    args = (backend, namespace, 250, start, out)
    procs = [SPAWN.Process(target=_workers.collect_tokens, args=args) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    samples = [s for _ in procs for s in out.get(timeout=120)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(samples) == 1000
    in_hold_order = [token for _, token in sorted(samples)]
    assert all(a < b for a, b in itertools.pairwise(in_hold_order))


def test_watchdog_keeps_a_one_second_lease_alive_for_five_seconds(
    redis_client: Any, redis_cluster: Any, namespace: str
) -> None:
    """Both backends in one 5 s window (held side by side to keep the suite short)."""
    lk = [Locks(c, namespace=namespace, lease_ms=1_000) for c in (redis_client, redis_cluster)]
    lost: list[int] = []
    locks = [x.lock(f"long-{i}") for i, x in enumerate(lk)]
    for lock in locks:
        lock.on_lost = lambda: lost.append(1)
        lock.acquire()
    lock_keys = [key(namespace, f"long-{i}") for i in range(2)]
    deadline = time.monotonic() + 5
    min_ttl = 1_000
    while time.monotonic() < deadline:
        for c, k in zip((redis_client, redis_cluster), lock_keys, strict=True):
            ttl = c.pttl(k)
            assert 0 < ttl <= 1_000, f"lease must stay alive (pttl {ttl})"
            min_ttl = min(min_ttl, ttl)
        time.sleep(0.05)
    assert all(lock.is_held_by_current() for lock in locks)
    assert min_ttl > 400, "renewed every lease/3, so the TTL never drops much below 2/3 of the lease"
    assert not lost and not any(lock.lost for lock in locks)
    for lock, x in zip(locks, lk, strict=True):
        lock.release()
        assert not lock.is_locked()
        x.close()


def test_owner_thread_exit_stops_renewal_and_lock_expires(client: Any, namespace: str) -> None:
    lease_ms = 1_000
    with Locks(client, namespace=namespace, lease_ms=lease_ms) as locks:
        lock = locks.lock("orphan")
        t = threading.Thread(target=lock.acquire)
        t.start()
        t.join()
        died = time.monotonic()
        lock_key = key(namespace, "orphan")
        assert client.exists(lock_key)
        gone = poll(lambda: not client.exists(lock_key), timeout=5, interval=0.002)
        # expired within lease + one renewal period of the owner's death: nobody renewed it afterwards
        assert gone - died <= (lease_ms + lease_ms / 3) / 1000 + 0.15
        poll(lambda: len(locks.holds) == 0, timeout=2)
        assert lock.acquire(blocking=False)
        lock.release()


def test_lease_given_means_no_watchdog_and_release_after_expiry_raises_lost(locks: Locks, client: Any) -> None:
    lock = locks.lock("leased")
    lock.acquire(lease_ms=200)
    assert 0 < client.pttl(key(locks.namespace, "leased")) <= 200
    poll(lambda: not client.exists(key(locks.namespace, "leased")), timeout=3)
    assert locks.watchdog.thread is None, "no watchdog for holds with a lease"
    with pytest.raises(LockLostError, match="no longer held when released"):
        lock.release()
    assert lock.hold_count == 0


def test_key_deleted_under_watchdog_fires_on_lost_once_within_a_renewal_period(client: Any, namespace: str) -> None:
    lease_ms = 900
    with Locks(client, namespace=namespace, lease_ms=lease_ms) as locks:
        lock = locks.lock("deleted")
        fired: list[float] = []
        lock.on_lost = lambda: fired.append(time.monotonic())
        lock.acquire()
        client.delete(key(namespace, "deleted"))
        deleted = time.monotonic()
        poll(lambda: fired, timeout=5)
        assert fired[0] - deleted <= lease_ms / 3000 + 0.15
        time.sleep(lease_ms / 1000)
        assert len(fired) == 1 and lock.lost
        with pytest.raises(LockLostError):
            lock.acquire()
        with pytest.raises(LockLostError):
            lock.release()
        assert lock.hold_count == 0


class _ReleaseReplyLost:
    """A client whose next release script runs on the server but whose reply is lost (ConnectionError)."""

    def __init__(self, inner: Any, sha: str, duplicate: bool) -> None:
        self.inner, self.sha, self.duplicate, self.armed = inner, sha, duplicate, False

    def evalsha(self, sha: str, *args: Any) -> Any:
        reply = self.inner.evalsha(sha, *args)
        if sha == self.sha and self.armed:
            self.armed = False
            if self.duplicate:  # redis-py's own retry re-sends the same call: the second run must not fail
                return self.inner.evalsha(sha, *args)
            raise RedisConnectionError("reply lost")
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("duplicate", [False, True], ids=["caller-retries", "client-resends"])
def test_release_retried_after_connection_error_is_idempotent(client: Any, namespace: str, duplicate: bool) -> None:
    from distkit.locks.specs import LOCK_RELEASE

    flaky = _ReleaseReplyLost(client, LOCK_RELEASE.sha, duplicate)
    with Locks(flaky, namespace=namespace) as locks:
        lock = locks.lock("retry")
        lock.acquire()
        lock.acquire()
        if duplicate:
            flaky.armed = True
            lock.release()  # ran twice on the server, decremented once
            assert lock.hold_count == 1 and lock.is_held_by_current()
            flaky.armed = True
            lock.release()
        else:
            lock.release()
            flaky.armed = True
            with pytest.raises(BackendUnavailableError):
                lock.release()  # freed on the server, reply lost
            assert lock.hold_count == 1
            lock.release()  # the retry: no LockNotOwnedError
        assert lock.hold_count == 0
        assert not lock.is_locked()


def test_ten_thousand_cycles_leave_no_keys_and_only_the_watchdog_thread(
    locks: Locks, client: Any, namespace: str
) -> None:
    lock = locks.lock("churn")
    for _ in range(10_000):
        lock.acquire()
        lock.release()
    # some contended rounds too, so the pub/sub listener runs
    lock.acquire()
    t = threading.Thread(target=lambda: (lock.acquire(), lock.release()))
    t.start()
    poll(lambda: locks.hub.waiting == 1)
    lock.release()
    t.join(5)
    assert keys_of(client, namespace) == []
    assert len(locks.holds) == 0
    poll(lambda: locks.hub.thread is None, timeout=5)  # the listener leaves after linger_s without waiters
    distkit_threads = [th.name for th in threading.enumerate() if th.name.startswith("distkit-")]
    assert sorted(distkit_threads) == [f"distkit-watchdog-{namespace}", f"distkit-watchdog-{namespace}-expiry"]


def test_keys_and_channel_share_one_hash_slot(locks: Locks) -> None:
    from redis.crc import key_slot

    fair = locks.fair_lock("slot")
    keys = [*fair._spec.keys, fair._spec.channel.encode()]
    assert len({key_slot(k) for k in keys}) == 1
    assert fair._spec.keys[0] == b"{" + locks.namespace.encode() + b":slot}"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_is_a_new_owner_with_its_own_watchdog(redis_client: Any, namespace: str) -> None:
    with Locks(redis_client, namespace=namespace, lease_ms=2_000) as locks:
        parent_lock = locks.lock("parent")
        parent_lock.acquire()
        locks.lock("warm").acquire(lease_ms=5_000)  # the parent's watchdog thread is running
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                child_view = locks.lock("parent")
                ok = child_view.hold_count == 0 and child_view.acquire(blocking=False) is False
                other = locks.lock("child")
                other.acquire()
                alive = locks.watchdog.thread is not None and locks.watchdog.thread.is_alive()
                other.release()
                code = 0 if ok and alive else 2
            finally:
                os.write(w, bytes([code]))
                os._exit(0)
        os.close(w)
        result = os.read(r, 1)
        os.waitpid(pid, 0)
        os.close(r)
        assert result == b"\x00"
        assert parent_lock.is_held_by_current()
        parent_lock.release()
