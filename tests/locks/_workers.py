"""Child-process bodies for the multi-process lock tests (spawned: each builds its own Redis client)."""

from __future__ import annotations

import os
import time
from typing import Any

from distkit._redis import key
from distkit.config import Settings
from distkit.locks import Locks


def make_client(kind: str, url: str | None = None) -> Any:
    """A fresh client in the child: ``redis`` (DISTKIT_REDIS_URL or ``url``) or ``cluster``."""
    import redis

    if kind == "cluster":
        return Settings.from_env().redis_cluster()
    return redis.Redis.from_url(url or Settings.from_env().redis_url)


def count_under_lock(kind: str, namespace: str, increments: int, start: Any) -> None:
    """Read-modify-write a shared counter ``increments`` times, each under the lock, with a pause in between
    the read and the write (so a broken lock would lose updates)."""
    client = make_client(kind)
    counter = key(namespace, "counter", "value")
    with Locks(client, namespace=namespace, lease_ms=5_000) as locks:
        lock = locks.lock("counter")
        start.wait()
        for _ in range(increments):
            with lock:
                value = int(client.get(counter) or 0)
                time.sleep(0.0005)
                client.set(counter, value + 1, px=60_000)


def collect_tokens(kind: str, namespace: str, rounds: int, start: Any, out: Any) -> None:
    """Acquire ``rounds`` times, recording (token, monotonic time of acquisition) pairs while holding."""
    client = make_client(kind)
    tokens = []
    with Locks(client, namespace=namespace, lease_ms=5_000) as locks:
        lock = locks.lock("fenced")
        start.wait()
        for _ in range(rounds):
            with lock:
                tokens.append((time.monotonic_ns(), lock.fencing_token))
    out.put(tokens)


def hold_until_killed(kind: str, url: str | None, namespace: str, lease_ms: int, ready: Any) -> None:
    """Take the lock with the watchdog and keep it (renewed) until SIGKILLed."""
    client = make_client(kind, url)
    locks = Locks(client, namespace=namespace, lease_ms=lease_ms)
    locks.lock("victim").acquire()
    ready.set()
    while True:
        time.sleep(1)


class CountingClient:
    """Wraps a client and counts the commands sent through it (scripts included)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def evalsha(self, *args: Any) -> Any:
        self.calls += 1
        return self.inner.evalsha(*args)

    def eval(self, *args: Any) -> Any:
        self.calls += 1
        return self.inner.eval(*args)

    def execute_command(self, *args: Any, **kw: Any) -> Any:
        self.calls += 1
        return self.inner.execute_command(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def wait_for_victim(kind: str, url: str | None, namespace: str, ready: Any, out: Any) -> None:
    """Block on the lock the victim holds; report (acquired at monotonic ns, Redis calls made while waiting)."""
    client = CountingClient(make_client(kind, url))
    with Locks(client, namespace=namespace, lease_ms=30_000) as locks:
        lock = locks.lock("victim")
        ready.wait()
        ok = lock.acquire(timeout=20, lease_ms=5_000)
        acquired_at = time.monotonic_ns()
        calls = client.calls
        out.put((ok, acquired_at, calls, os.getpid()))
        lock.release()


def queue_on_fair_lock(kind: str, namespace: str, waiter_ttl_ms: int) -> None:
    """Wait (in the fair queue) for a lock someone else holds, until killed."""
    client = make_client(kind)
    locks = Locks(client, namespace=namespace, waiter_ttl_ms=waiter_ttl_ms)
    locks.fair_lock("fifo").acquire(timeout=60)


def take_permits(kind: str, namespace: str, permits: int, out: Any) -> None:
    """Another process configured with ``permits``: report how many permits it could take (or the error)."""
    client = make_client(kind)
    with Locks(client, namespace=namespace) as locks:
        sem = locks.semaphore("pool", permits=permits, lease_ms=10_000)
        taken = 0
        try:
            while sem.acquire(blocking=False) is not None:
                taken += 1
            out.put(("taken", taken, sem.available()))
        except Exception as exc:
            out.put((type(exc).__name__, taken, -1))


def count_under_lock_in_threads(kind: str, namespace: str, threads: int, increments: int, start: Any) -> None:
    """Like :func:`count_under_lock`, from ``threads`` threads sharing one ``Locks`` (one pub/sub hub: one waiter
    reads the wake-up channel for all the others)."""
    import threading

    client = make_client(kind)
    counter = key(namespace, "counter", "value")
    errors: list[BaseException] = []
    with Locks(client, namespace=namespace, lease_ms=5_000) as locks:
        lock = locks.lock("counter")

        def work() -> None:
            try:
                for _ in range(increments):
                    with lock:
                        value = int(client.get(counter) or 0)
                        time.sleep(0.0002)
                        client.set(counter, value + 1, px=60_000)
            except BaseException as exc:  # reported through the exit code
                errors.append(exc)

        start.wait()
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    if errors:
        raise errors[0]
