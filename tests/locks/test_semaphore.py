"""Expirable-permit semaphore."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from distkit.errors import InvalidArgumentError, LockLostError, LockNotOwnedError, LockTimeoutError
from distkit.locks import Locks
from tests.locks.conftest import keys_of
from tests.locks.test_lock import poll, run_in_thread


def test_never_more_than_permits_holders(locks: Locks, client: Any, namespace: str) -> None:
    sem = locks.semaphore("pool", permits=3)
    guard = threading.Lock()
    current = peak = 0

    def worker() -> None:
        nonlocal current, peak
        for _ in range(10):
            with sem:
                with guard:
                    current += 1
                    peak = max(peak, current)
                time.sleep(0.003)
                with guard:
                    current -= 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert peak == 3
    assert sem.available_permits() == 3
    assert keys_of(client, namespace) == []


def test_permits_expire_on_their_lease(locks: Locks) -> None:
    sem = locks.semaphore("leased", permits=1, lease_ms=250)
    permit = sem.acquire()
    assert permit is not None and sem.acquire(blocking=False) is None
    t0 = time.monotonic()
    second = run_in_thread(lambda: sem.acquire(timeout=3))
    assert second is not None and 0.15 < time.monotonic() - t0 < 1.5
    with pytest.raises(LockLostError):
        sem.release(permit)
    sem.release(second)


def test_release_by_id_from_another_process_and_unknown_permits(locks: Locks, client: Any) -> None:
    sem = locks.semaphore("shared", permits=1, lease_ms=10_000)
    permit = sem.acquire()
    assert permit is not None
    with Locks(client, namespace=locks.namespace) as elsewhere:
        elsewhere.semaphore("shared", permits=1).release(permit)
        with pytest.raises(LockNotOwnedError, match="not held"):
            elsewhere.semaphore("shared", permits=1).release("no-such-permit")
    assert sem.available_permits() == 1


def test_guard_timeout_and_bad_arguments(locks: Locks) -> None:
    sem = locks.semaphore("tiny", permits=1)
    with sem(timeout=1) as permit:
        assert permit

        def contender() -> None:
            with sem(timeout=0.1):
                pass

        with pytest.raises(LockTimeoutError):
            run_in_thread(contender)
    with pytest.raises(InvalidArgumentError, match="permits must be a positive int"):
        locks.semaphore("bad", permits=0)
    with pytest.raises(LockNotOwnedError):
        sem.__exit__(None, None, None)
    poll(lambda: sem.available_permits() == 1)
