"""Read-write lock: sharing, exclusion both ways, downgrade, refused upgrade, writer preference, per-hold leases."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from distkit._redis import key
from distkit.errors import LockUpgradeError
from distkit.locks import Locks
from tests.locks.conftest import keys_of
from tests.locks.test_lock import poll, run_in_thread


def test_readers_share(locks: Locks) -> None:
    rw = locks.rw_lock("cache:hy")
    inside = threading.Barrier(3, timeout=10)

    def reader() -> None:
        with rw.read_lock():
            inside.wait()  # all three are inside at once
            inside.wait()

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert not any(t.is_alive() for t in threads)
    assert not rw.read_lock().is_locked()


def test_writer_excludes_readers_and_readers_exclude_writer(locks: Locks) -> None:
    rw = locks.rw_lock("doc")
    read, write = rw.read_lock(), rw.write_lock()
    with write:
        assert run_in_thread(lambda: read.acquire(blocking=False)) is False
        assert run_in_thread(lambda: write.acquire(blocking=False)) is False
    with read:
        assert run_in_thread(lambda: write.acquire(blocking=False)) is False
        assert run_in_thread(lambda: (read.acquire(blocking=False), read.release())[0]) is True
    assert run_in_thread(lambda: (write.acquire(blocking=False), write.release())[0]) is True


def test_blocked_writer_is_woken_when_last_reader_leaves(locks: Locks) -> None:
    rw = locks.rw_lock("wake")
    rw.read_lock().acquire()
    got: list[float] = []
    t = threading.Thread(target=lambda: (rw.write_lock().acquire(timeout=10), got.append(time.monotonic())))
    t.start()
    poll(lambda: locks.hub.waiting == 1)
    time.sleep(0.05)
    released = time.monotonic()
    rw.read_lock().release()
    t.join(10)
    assert got and got[0] - released < 0.5  # far below the 3 s lease: woken by the release message


def test_downgrade_writer_takes_read_then_releases_write(locks: Locks) -> None:
    rw = locks.rw_lock("down")
    read, write = rw.read_lock(), rw.write_lock()
    write.acquire()
    read.acquire()  # downgrade: allowed
    assert write.fencing_token < read.fencing_token
    write.release()
    assert read.is_held_by_current() and not write.is_locked()
    assert run_in_thread(lambda: (read.acquire(blocking=False), read.release())[0]) is True, "readers may join"
    assert run_in_thread(lambda: write.acquire(blocking=False)) is False, "writers still wait"
    read.release()
    assert not read.is_locked()


def test_upgrade_raises_immediately(locks: Locks, client: Any, namespace: str) -> None:
    rw = locks.rw_lock("up")
    with rw.read_lock():
        t0 = time.monotonic()
        with pytest.raises(LockUpgradeError, match="release it before asking for the write lock"):
            rw.write_lock().acquire(timeout=5)
        assert time.monotonic() - t0 < 0.5
        # the server refuses too (a second Locks object in this process has no local record of the read hold)
        from distkit.locks.specs import SharedSpec

        spec = rw.write_lock()._spec
        assert isinstance(spec, SharedSpec)
        reply = spec.acquire_call(locks.holder(), 0, 1000, True)
        assert reply.script(client, reply.keys, reply.args) == [-1, 0]
    assert keys_of(client, namespace) == []


def test_reentrant_reads_and_writes(locks: Locks) -> None:
    rw = locks.rw_lock("re")
    with rw.write_lock(), rw.write_lock():
        assert rw.write_lock().hold_count == 2
    with rw.read_lock(), rw.read_lock():
        assert rw.read_lock().hold_count == 2
    assert not rw.read_lock().is_locked()


def test_prefer_writers_writer_gets_in_while_eight_readers_keep_reacquiring(locks: Locks) -> None:
    rw = locks.rw_lock("hot", prefer_writers=True)
    stop = threading.Event()
    reads = [0] * 8

    def reader(i: int) -> None:
        while not stop.is_set():
            with rw.read_lock():
                reads[i] += 1
                time.sleep(0.01)

    readers = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in readers:
        t.start()
    poll(lambda: sum(reads) >= 16)  # the read lock is busy, overlapping holds
    write = rw.write_lock()
    t0 = time.monotonic()
    got = run_in_thread(lambda: (write.acquire(timeout=10), reads.copy(), write.release())[:2])
    waited = time.monotonic() - t0
    stop.set()
    for t in readers:
        t.join(10)
    assert got[0] is True and waited < 3
    assert all(n > 0 for n in got[1]), "every reader was reading before the writer got in"


def test_dead_reader_is_dropped_by_its_own_lease(locks: Locks, client: Any, namespace: str) -> None:
    rw = locks.rw_lock("crash")
    run_in_thread(lambda: rw.read_lock().acquire(lease_ms=400))  # the thread ends holding a read lock
    with rw.read_lock():  # a live reader with a long lease keeps reading meanwhile
        t0 = time.monotonic()
        assert run_in_thread(lambda: rw.write_lock().acquire(timeout=0.2)) is False
    assert run_in_thread(lambda: (rw.write_lock().acquire(timeout=3), rw.write_lock().release())[0]) is True
    assert time.monotonic() - t0 < 1.5
    assert client.zcard(key(namespace, "crash", "holds")) == 0
    assert keys_of(client, namespace) == []
