"""Faults: a holder process SIGKILLed, Redis restarted under a held lock (private redis-server only)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import redis

from distkit._redis import key
from distkit.locks import Locks
from tests.locks import _workers
from tests.locks.test_lock import poll

SPAWN = multiprocessing.get_context("spawn")


def test_sigkilled_holder_blocked_waiter_acquires_within_lease(backend: str, client: Any, namespace: str) -> None:
    lease_ms = 1_000
    ready, out = SPAWN.Event(), SPAWN.Queue()
    holder = SPAWN.Process(target=_workers.hold_until_killed, args=(backend, None, namespace, lease_ms, ready))
    waiter = SPAWN.Process(target=_workers.wait_for_victim, args=(backend, None, namespace, ready, out))
    holder.start()
    waiter.start()
    assert ready.wait(30)
    lock_key = key(namespace, "victim")
    poll(lambda: client.exists(lock_key), timeout=10)
    time.sleep(1.2)  # the waiter is blocked through a few of the holder's renewals
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    killed = time.monotonic_ns()
    holder.join(10)
    ok, acquired_at, calls, _pid = out.get(timeout=30)
    waiter.join(10)
    assert ok
    waited_ms = (acquired_at - killed) / 1e6
    assert waited_ms <= lease_ms + 100, f"acquired {waited_ms:.0f} ms after the kill"
    # no polling loop: one attempt, one after subscribing, about one re-check per lease, and the winning one
    assert calls <= 8, f"waiter made {calls} Redis calls while blocked"


def test_redis_restart_under_watchdog_fires_on_lost_within_a_renewal_period(private_redis: Any, namespace: str) -> None:
    lease_ms = 900
    client = redis.Redis.from_url(private_redis.url)
    with Locks(client, namespace=namespace, lease_ms=lease_ms) as locks:
        lock = locks.lock("restart")
        fired: list[float] = []
        lock.on_lost = lambda: fired.append(time.monotonic())
        lock.acquire()
        private_redis.restart()  # a fresh, empty server on the same port
        restarted = time.monotonic()
        poll(lambda: fired, timeout=5)
        assert fired[0] - restarted <= lease_ms / 3000 + 0.15
        assert lock.lost
        assert len(fired) == 1
    client.close()


def test_waiter_survives_redis_restart_and_pubsub_works_afterwards(private_redis: Any, namespace: str) -> None:
    client = redis.Redis.from_url(private_redis.url)
    other = redis.Redis.from_url(private_redis.url)
    with Locks(client, namespace=namespace) as locks, Locks(other, namespace=namespace) as peer:
        lock, peer_lock = locks.lock("r"), peer.lock("r")
        channel = lock._spec.channel

        def wait_in_thread() -> tuple[threading.Thread, list[float]]:
            got: list[float] = []

            def body() -> None:
                lock.acquire(timeout=30)
                got.append(time.monotonic())
                lock.release()

            t = threading.Thread(target=body)
            t.start()
            poll(lambda: other.pubsub_numsub(channel)[0][1] == 1, timeout=10)
            return t, got

        peer_lock.acquire(lease_ms=20_000)  # the waiter's bounded re-check would be 20 s
        t, got = wait_in_thread()
        private_redis.restart()  # the holder's key is gone, the waiter's subscription too
        restarted = time.monotonic()
        t.join(15)
        assert got and got[0] - restarted < 5, "the hub reconnected and woke the waiter to re-check"
        # the peer's lease-only hold vanished while its lease was valid: release() cannot tell that apart from a
        # retried release whose first reply was lost, so it does not raise (docs/locks.md, "release retries")
        peer_lock.release()
        assert peer_lock.hold_count == 0

        peer_lock.acquire(lease_ms=20_000)  # after the restart, a release still wakes a waiter at once
        t, got = wait_in_thread()
        time.sleep(0.05)
        released = time.monotonic()
        peer_lock.release()
        t.join(15)
        assert got and got[0] - released < 1
    client.close()
    other.close()
