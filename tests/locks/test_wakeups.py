"""Wake-ups through one ``Locks``' pub/sub listener: each test tries to strand a blocked acquire (several locks
on one hub, a waiter giving up beside another, the connection killed under a waiter, close(), many threads of
many processes). A lost wake-up shows as an acquire that is still waiting well before its own timeout: the
holders' leases are far longer, so the lease-based re-check cannot rescue it, and an acquire that only
succeeds on its last attempt at its deadline was never woken."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pytest

from distkit._redis import key
from distkit.locks import Locks
from tests.locks import _workers

SPAWN = multiprocessing.get_context("spawn")
LONG_LEASE_S = 60.0


def poll(predicate: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def blocked_on(locks: Locks, name: str) -> threading.Event:
    """Set once a waiter for ``name`` is blocked in the hub's ``wait`` (past its subscription and first re-check:
    from then on only a wake-up, or its own timeout, gets it going)."""
    channel = locks.lock(name)._spec.channel
    entered = threading.Event()
    hub = locks.hub
    original = hub.wait

    def spy(waiter: Any, seconds: float) -> None:
        if waiter.channel == channel:
            entered.set()
        original(waiter, seconds)

    hub.wait = spy  # type: ignore[method-assign]
    return entered


class Waiting:
    """A thread blocked in ``lock.acquire(timeout=...)``; ``result`` is its outcome."""

    def __init__(self, lock: Any, timeout: float) -> None:
        self.result: bool | None = None
        self.thread = threading.Thread(target=self._run, args=(lock, timeout))
        self.thread.start()

    def _run(self, lock: Any, timeout: float) -> None:
        self.result = lock.acquire(timeout=timeout)
        if self.result:
            lock.release()

    def join(self, timeout: float = 4.0) -> bool | None:
        """The outcome within ``timeout`` (None: still waiting). Under the acquire's own timeout: an acquire
        that only succeeds on its last attempt at its deadline was never woken."""
        self.thread.join(timeout)
        return self.result


def blocked_pair(mine: Locks, theirs: Locks, x_timeout: float) -> tuple[Any, Any, Waiting, Waiting]:
    """``theirs`` holds x and y (long leases); a waiter of ``mine`` is blocked on each: (x, y, on_x, on_y)."""
    x, y = theirs.lock("x"), theirs.lock("y")
    assert x.acquire(lease_s=LONG_LEASE_S) and y.acquire(lease_s=LONG_LEASE_S)
    x_blocked, y_blocked = blocked_on(mine, "x"), blocked_on(mine, "y")
    on_x = Waiting(mine.lock("x"), timeout=x_timeout)
    assert x_blocked.wait(5)
    on_y = Waiting(mine.lock("y"), timeout=8)
    assert y_blocked.wait(5)
    return x, y, on_x, on_y


def blocked_one(mine: Locks, theirs: Locks) -> tuple[Any, Waiting, int]:
    """``theirs`` holds x; a waiter of ``mine`` is blocked on it: (x, the waiter, the local port of ``mine``'s
    wake-up connection)."""
    held = theirs.lock("x")
    assert held.acquire(lease_s=LONG_LEASE_S)
    blocked = blocked_on(mine, "x")
    waiting = Waiting(mine.lock("x"), timeout=15)
    assert blocked.wait(5)
    return held, waiting, mine.hub._pubsub.connection._sock.getsockname()[1]


def test_a_release_wakes_its_waiter_while_a_waiter_of_another_lock_stays_blocked(client: Any, namespace: str) -> None:
    with Locks(client, namespace=namespace) as mine, Locks(client, namespace=namespace) as theirs:
        x, y, on_x, on_y = blocked_pair(mine, theirs, x_timeout=8)
        y.release()
        assert on_y.join() is True, "y's release woke y's waiter"
        assert on_x.thread.is_alive() and on_x.result is None
        x.release()
        assert on_x.join() is True


def test_a_waiter_giving_up_strands_no_other_waiter(client: Any, namespace: str) -> None:
    with Locks(client, namespace=namespace) as mine, Locks(client, namespace=namespace) as theirs:
        x, y, on_x, on_y = blocked_pair(mine, theirs, x_timeout=1.0)
        assert on_x.join(8) is False  # gave up, and left its channel
        y.release()
        assert on_y.join() is True
        x.release()


@pytest.mark.parametrize("backend", ["redis"])
def test_a_killed_pubsub_connection_is_replaced_under_a_blocked_waiter(client: Any, namespace: str) -> None:
    with Locks(client, namespace=namespace) as mine, Locks(client, namespace=namespace) as theirs:
        held, waiting, port = blocked_one(mine, theirs)
        assert client.client_kill(f"127.0.0.1:{port}")
        poll(lambda: mine.hub._pubsub is not None and mine.hub._pubsub.connection._sock.getsockname()[1] != port)
        poll(lambda: client.pubsub_numsub(mine.lock("x")._spec.channel)[0][1] == 1)
        held.release()
        assert waiting.join(10) is True


def test_close_ends_an_acquire_without_timeout(client: Any, namespace: str) -> None:
    from distkit.errors import LocksClosedError

    with Locks(client, namespace=namespace) as theirs:
        held = theirs.lock("x")
        assert held.acquire(lease_s=LONG_LEASE_S)
        mine = Locks(client, namespace=namespace)
        outcome: list[BaseException | bool] = []

        def wait() -> None:
            try:
                outcome.append(mine.lock("x").acquire())  # no timeout: only close() can end it
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=wait)
        blocked = blocked_on(mine, "x")
        t.start()
        assert blocked.wait(5)
        mine.close()
        t.join(5)
        assert not t.is_alive() and len(outcome) == 1 and isinstance(outcome[0], LocksClosedError)
        held.release()


def test_many_threads_of_two_processes_take_turns_exactly(backend: str, client: Any, namespace: str) -> None:
    """2 processes x 8 threads x 20 read-modify-write increments under one lock, every waiter of a process on
    one hub: a lost wake-up hangs, a broken exclusion loses updates."""
    start = SPAWN.Event()
    args = (backend, namespace, 8, 20, start)
    procs = [SPAWN.Process(target=_workers.count_under_lock_in_threads, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert int(client.get(key(namespace, "counter", "value"))) == 320


@pytest.mark.parametrize("backend", ["redis"])
def test_the_clients_health_check_interval_is_honoured_on_the_wake_up_connection(
    redis_url: str, client: Any, namespace: str
) -> None:
    """The listener reads with the connection's own calls (not ``PubSub.parse_response``), and still PINGs an
    idle wake-up connection as often as the client's ``health_check_interval`` asks."""
    import redis

    checked = redis.Redis.from_url(redis_url, health_check_interval=0.2)
    try:
        with Locks(client, namespace=namespace) as theirs, Locks(checked, namespace=namespace) as mine:
            held, waiting, port = blocked_one(mine, theirs)

            def last_command() -> str:
                for c in client.client_list(_type="pubsub"):
                    if c["addr"] == f"127.0.0.1:{port}":
                        return str(c["cmd"])
                return ""

            assert last_command() == "subscribe"
            poll(lambda: last_command() == "ping", timeout=5)
            held.release()
            assert waiting.join(10) is True
    finally:
        checked.close()
