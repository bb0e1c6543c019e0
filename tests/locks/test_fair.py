"""Fair lock: FIFO among waiters, dead waiters lose their place, abandoned waits leave no trace."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from typing import Any

from distkit._redis import key
from distkit.locks import Locks
from tests.locks import _workers
from tests.locks.conftest import keys_of
from tests.locks.test_lock import poll, run_in_thread

SPAWN = multiprocessing.get_context("spawn")


def test_waiters_are_served_in_arrival_order(locks: Locks, client: Any, namespace: str) -> None:
    fair = locks.fair_lock("fifo")
    fair.acquire()
    queue = key(namespace, "fifo", "queue")
    order: list[int] = []
    threads = []
    for i in range(5):

        def waiter(i: int = i) -> None:
            with fair:
                order.append(i)

        t = threading.Thread(target=waiter)
        t.start()
        threads.append(t)
        poll(lambda i=i: client.llen(queue) == i + 1)  # queued before the next one arrives
    assert run_in_thread(lambda: fair.acquire(blocking=False)) is False, "a newcomer does not jump the queue"
    fair.release()
    for t in threads:
        t.join(15)
    assert order == [0, 1, 2, 3, 4]
    assert keys_of(client, namespace) == []


def test_a_killed_waiter_loses_its_place(backend: str, locks: Locks, client: Any, namespace: str) -> None:
    ttl = locks.waiter_ttl_ms
    fair = locks.fair_lock("fifo")
    fair.acquire()
    queue = key(namespace, "fifo", "queue")
    child = SPAWN.Process(target=_workers.queue_on_fair_lock, args=(backend, namespace, ttl))
    child.start()
    poll(lambda: client.llen(queue) == 1, timeout=30)
    got: list[float] = []
    t = threading.Thread(target=lambda: (fair.acquire(timeout=30), got.append(time.monotonic()), fair.release()))
    t.start()
    poll(lambda: client.llen(queue) == 2)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    killed = time.monotonic()
    child.join(10)
    fair.release()  # the dead child is at the head: the live waiter must get past it
    t.join(30)
    assert got, "the live waiter acquired"
    # the dead entry expires at most waiter_ttl after its last refresh; the live waiter re-checks every ttl/3
    assert got[0] - killed <= (ttl + ttl / 3) / 1000 + 0.3
    poll(lambda: not keys_of(client, namespace), timeout=5)


def test_timed_out_waiter_leaves_no_queue_entry(locks: Locks, client: Any, namespace: str) -> None:
    fair = locks.fair_lock("fifo")
    fair.acquire()
    assert run_in_thread(lambda: fair.acquire(timeout=0.2)) is False
    assert client.llen(key(namespace, "fifo", "queue")) == 0
    assert client.zcard(key(namespace, "fifo", "queue-ttl")) == 0
    assert locks.hub.waiting == 0
    poll(lambda: not locks.hub.subscribed_channels, timeout=5)  # dropped after linger_s unused
    fair.release()
    assert keys_of(client, namespace) == []
