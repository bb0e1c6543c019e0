"""Synchronous locks: :class:`Locks` (the factory) and :class:`Lock` (what ``locks.lock(name)`` returns).

>>> import redis                                                      # doctest: +SKIP
>>> locks = Locks(redis.Redis(), namespace="app")                     # doctest: +SKIP
>>> with locks.lock("order:42") as lock:                              # doctest: +SKIP
...     save(order, fencing_token=lock.fencing_token)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from distkit.errors import BackendUnavailableError, LockTimeoutError
from distkit.locks.base import LocksBase, LockView
from distkit.locks.holds import thread_alive, thread_serial
from distkit.locks.ops import Call, Flow, drive
from distkit.locks.waiters import Hub
from distkit.locks.watchdog import Watchdog

if TYPE_CHECKING:
    from distkit.locks.semaphore import Semaphore

T = TypeVar("T")
LockT = TypeVar("LockT", bound="Lock")


def unavailable(exc: BaseException) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"Redis did not answer ({exc}); the lock state is unknown: retry the call (acquire and release are "
        "idempotent under retries) or let the lease expire"
    )


class Locks(LocksBase["Lock", "Semaphore"]):
    """Redisson-style locks over one redis-py client (``Redis`` or ``RedisCluster``).

    One ``Locks`` owns one pub/sub listener thread (shared by every waiter) and one watchdog thread (renewing
    holds taken without ``lease_ms``), both started on first need and stopped by :meth:`close`, at interpreter
    exit, and re-created in a forked child.

    Args:
        client: a redis-py ``Redis`` or ``RedisCluster``.
        namespace: prefix of every key (``{namespace:name}``).
        lease_ms: the watchdog's lease: a hold whose owner dies expires at most this long after its last renewal
            (renewals every ``lease_ms / 3``).
        waiter_ttl_ms: how long a waiter's place in a fair queue (or a waiting writer's claim) survives without
            being refreshed.
        linger_s: how long a wake-up channel stays subscribed after its last waiter left (the listener stops
            when none is left).

    >>> locks = Locks(redis.Redis(), namespace="app")                 # doctest: +SKIP
    >>> lock = locks.lock("order:42")                                 # doctest: +SKIP
    >>> lock.acquire(timeout=5)                                       # doctest: +SKIP
    True
    """

    lock_class: type[Lock]
    semaphore_class: type[Semaphore]

    owner_fns = (thread_serial, thread_alive)  # the owner is the calling thread
    hub_class, watchdog_class = Hub, Watchdog

    def _script(self, op: Call) -> Any:
        return op.script(self.client, op.keys, op.args)

    def run(self, flow: Flow[T]) -> T:
        """Run a flow with blocking I/O; Redis connection errors become ``BackendUnavailableError``."""
        try:
            return drive(flow, self.execute)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise unavailable(exc) from exc

    def close_threads(self) -> None:
        """Stop the watchdog and the pub/sub listener (holds are not released: they expire on their lease)."""
        self.watchdog.stop()
        self.hub.close()

    def close(self) -> None:
        """Stop background threads; further acquires raise. Held locks expire on their lease."""
        self.closed = True
        self.close_threads()

    def __enter__(self) -> Locks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Lock(LockView):
    """A reentrant lock (also each side of a read-write lock). Use as ``with lock:`` or
    ``with lock(timeout=2):`` (raises :class:`~distkit.errors.LockTimeoutError`)."""

    _locks: Locks

    def acquire(self, blocking: bool = True, timeout: float | None = None, lease_ms: int | None = None) -> bool:
        """Take the lock (again, if the caller holds it). ``lease_ms=None``: the watchdog keeps it alive while
        the calling thread lives; an int: it expires after that long unless released. Returns False when not
        acquired (``blocking=False``, or ``timeout`` seconds passed)."""
        return self._locks.run(self._acquire(blocking, timeout, lease_ms))

    def release(self) -> None:
        """Release one hold. Raises :class:`~distkit.errors.LockNotOwnedError` if the caller does not hold it,
        :class:`~distkit.errors.LockLostError` if it expired or was deleted before this release."""
        self._locks.run(self._release())

    def is_locked(self) -> bool:
        """Held by anyone (one round trip)."""
        return self._locks.run(self._state())[0]

    def is_held_by_current(self) -> bool:
        """Held by the calling thread, according to Redis (one round trip)."""
        return self._locks.run(self._state())[1]

    def __enter__(self: LockT) -> LockT:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    @contextlib.contextmanager
    def __call__(self: LockT, timeout: float | None = None, lease_ms: int | None = None) -> Iterator[LockT]:
        """``with lock(timeout=2, lease_ms=10_000):``: like ``with lock:`` but gives up after ``timeout``."""
        if not self.acquire(True, timeout, lease_ms):
            raise LockTimeoutError(f"{self.name!r} not acquired within {timeout} s; retry or raise the timeout")
        try:
            yield self
        finally:
            self.release()


Locks.lock_class = Lock
