"""Synchronous locks: :class:`Locks` (the factory) and :class:`Lock` (what ``locks.lock(name)`` returns).

>>> import redis                                                      # doctest: +SKIP
>>> locks = Locks(redis.Redis(), namespace="app")                     # doctest: +SKIP
>>> with locks.lock("order:42") as lock:                              # doctest: +SKIP
...     save(order, fencing_token=lock.fencing_token)
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from distkit._otel import add_event, tracer_for
from distkit._redis import Runner
from distkit._types import SyncRedisLike
from distkit.errors import BackendUnavailableError, LockTimeoutError
from distkit.locks.base import LocksBase, LockView, kind_conflict
from distkit.locks.holds import Hold, thread_alive, thread_serial
from distkit.locks.ops import Call, Flow, Step
from distkit.locks.waiters import Hub
from distkit.locks.watchdog import CallbackThreads, Watchdog

if TYPE_CHECKING:
    from distkit.locks.multi import MultiLock
    from distkit.locks.semaphore import Semaphore

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
LockT = TypeVar("LockT", bound="Lock")


def unavailable(exc: BaseException) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"Redis did not answer ({exc}); the lock state is unknown: retry the call (acquire and release are "
        "idempotent under retries) or let the lease expire"
    )


def map_error(exc: BaseException, name: str) -> BaseException | None:
    """The typed error for a Redis failure (None: raise ``exc`` as it is)."""
    if isinstance(exc, BackendUnavailableError):
        return None
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return unavailable(exc)
    if isinstance(exc, ResponseError):
        return kind_conflict(exc, name)
    return None


class Locks(LocksBase["Lock", "Semaphore", SyncRedisLike]):
    """Redisson-style locks over one redis-py client (``Redis`` or ``RedisCluster``).

    One ``Locks`` owns one pub/sub listener thread (shared by every waiter) and one watchdog thread (renewing
    holds taken without a lease, plus its small expiry thread), started on first need and stopped by
    :meth:`close`, at interpreter exit, and re-created in a forked child.

    Args:
        client: a redis-py ``Redis`` or ``RedisCluster``.
        namespace: prefix of every key (``{namespace:name}``).
        lease_ms / lease_s: the watchdog's lease (default 30 s): a hold whose owner dies expires at most this
            long after its last renewal (renewals every lease / 3). Pass one of them, not both.
        waiter_ttl_ms: how long a waiter's place in a fair queue (or a waiting writer's claim) survives without
            being refreshed.
        linger_s: how long a wake-up channel stays subscribed after its last waiter left (the listener stops
            when none is left).
        call_timeout_s: the deadline of a single Redis call that has none of its own (a try-lock, ``release``,
            a state query, each attempt of an ``acquire`` without ``timeout``).
        config_ttl_ms: how long a semaphore's adjusted permit count (``add_permits``, ``drain``) outlives its
            last permit.

    >>> locks = Locks(redis.Redis(), namespace="app")                 # doctest: +SKIP
    >>> lock = locks.lock("order:42")                                 # doctest: +SKIP
    >>> lock.acquire(timeout=5)                                       # doctest: +SKIP
    True
    """

    lock_class: type[Lock]
    semaphore_class: type[Semaphore]

    owner_fns = (thread_serial, thread_alive)  # the owner is the calling thread
    async_client = False
    hub_class, watchdog_class, runner_class = Hub, Watchdog, Runner

    _callbacks: CallbackThreads | None = None  # made on the first loss (again in a forked child)

    def report_lost(self, hold: Hold) -> None:
        callbacks = self._callbacks
        if callbacks is None:
            callbacks = self._callbacks = CallbackThreads(f"distkit-on-lost-{self.namespace}")
        callbacks.submit(hold)

    def _reset_io(self) -> None:
        self._callbacks = None
        super()._reset_io()

    def run(self, flow: Flow[T], name: str = "") -> T:
        """Run a flow with blocking I/O; outages become ``BackendUnavailableError``, ``WRONGTYPE`` a
        ``LockConfigConflictError``."""
        # drive, inlined with a fast path for script calls (the hot path: two per acquire + release cycle)
        runner, execute = self.runner, self.execute
        step = Step(flow)
        try:
            while step.running:
                op = step.op
                try:
                    if op.__class__ is Call:
                        value = runner(op.script, op.keys, op.args, deadline=op.deadline)
                    else:
                        value = execute(op)
                except BaseException as exc:  # handed to the flow, which cleans up and re-raises
                    step.feed(None, exc)
                else:
                    step.feed(value, None)
            return step.result
        except (BackendUnavailableError, RedisConnectionError, RedisTimeoutError, OSError, ResponseError) as exc:
            typed = map_error(exc, name)
            if typed is None:
                raise
            raise typed from exc

    def multi_lock(self, *locks: str | Lock) -> MultiLock:
        """All-or-nothing over several locks (names or lock objects), taken in one global order (by key) so
        two callers asking for the same set in different orders cannot deadlock (Redisson's ``RedissonMultiLock``)."""
        from distkit.locks.multi import MultiLock

        return MultiLock([self.lock(x) if isinstance(x, str) else x for x in locks])

    def close_threads(self) -> None:
        """Stop the watchdog and the pub/sub listener (holds are not released: they expire on their lease)."""
        self.watchdog.stop()
        self.hub.close()

    def close(self) -> None:
        """Stop background threads; further acquires raise :class:`~distkit.errors.LocksClosedError`, and so do
        acquires blocked right now (a hold granted while closing is given back). Held locks expire on their
        lease."""
        self.closed = True
        self.hub.wake_all()
        self.close_threads()
        self.runner.close()

    def __enter__(self) -> Locks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Lock(LockView):
    """A reentrant lock (also each side of a read-write lock). Use as ``with lock:``,
    ``with lock(timeout=2):`` (raises :class:`~distkit.errors.LockTimeoutError`) or as a decorator
    (``@locks.lock("x")``, ``@locks.lock("x")(timeout=2)``)."""

    _locks: Locks

    def acquire(
        self,
        blocking: bool = True,
        timeout: float | None = None,
        lease_ms: int | None = None,
        *,
        lease_s: float | None = None,
    ) -> bool:
        """Take the lock (again, if the caller holds it). Without a lease the watchdog keeps it alive while
        the calling thread lives; with ``lease_ms`` (milliseconds) or ``lease_s`` (seconds) it expires after
        that long unless released. ``timeout`` is in seconds. Returns False when not acquired
        (``blocking=False``, or ``timeout`` passed); returns or raises within ``timeout`` even when Redis is
        unreachable."""
        if tracer_for(None) is None:
            return self._locks.run(self._acquire(blocking, timeout, lease_ms, lease_s), self.name)
        t0 = time.monotonic()
        ok = self._locks.run(self._acquire(blocking, timeout, lease_ms, lease_s), self.name)
        add_event("distkit.lock.acquire", {"lock": self.name, "acquired": ok, "wait_ms": (time.monotonic() - t0) * 1e3})
        return ok

    def release(self) -> None:
        """Release one hold. Raises :class:`~distkit.errors.LockNotOwnedError` if the caller does not hold it,
        :class:`~distkit.errors.LockLostError` if it was lost before this release (it expired, or was
        deleted and another owner took it): the hold is then dropped locally, without Redis."""
        self._locks.run(self._release(), self.name)

    def try_release(self) -> bool:
        """Like :meth:`release`, but False instead of ``LockNotOwnedError`` / ``LockLostError``."""
        return self._locks.run(self._release(quiet=True), self.name)

    def is_locked(self) -> bool:
        """Held by anyone (one round trip)."""
        return self._locks.run(self._state(), self.name)[0]

    def is_held_by_current(self) -> bool:
        """Held by the calling thread, according to Redis (one round trip)."""
        return self._locks.run(self._state(), self.name)[1]

    def is_held_by(self, owner: str) -> bool:
        """Held by ``owner`` (an id from :meth:`Locks.holder`, e.g. another thread's), according to Redis."""
        return self._locks.run(self._state(owner), self.name)[1]

    def remaining_lease_ms(self) -> int | None:
        """Milliseconds until the lock expires unless renewed or released (Redisson's ``remainTimeToLive``);
        None when nobody holds it."""
        return self._locks.run(self._remaining(), self.name)

    def extend(self, lease_ms: int | None = None, *, lease_s: float | None = None) -> None:
        """Make the caller's hold expire ``lease_ms`` / ``lease_s`` from now (a watchdog hold is renewed with
        that lease from then on). Raises ``LockNotOwnedError`` / ``LockLostError``."""
        self._locks.run(self._extend(lease_ms, lease_s), self.name)

    def force_unlock(self) -> bool:
        """Administrative: free the lock whoever holds it and wake its waiters; True if it was held. The
        holder finds out on its next renewal (``on_lost``) or release (``LockLostError`` if someone else took
        it meanwhile)."""
        return self._locks.run(self._force_unlock(), self.name)

    def __enter__(self: LockT) -> LockT:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    @overload
    def __call__(self, timeout: F, /) -> F: ...

    @overload
    def __call__(
        self: LockT, timeout: float | None = None, lease_ms: int | None = None, *, lease_s: float | None = None
    ) -> contextlib.AbstractContextManager[LockT]: ...

    def __call__(self, timeout: Any = None, lease_ms: int | None = None, *, lease_s: float | None = None) -> Any:
        """``with lock(timeout=2, lease_s=10):``: like ``with lock:`` but gives up after ``timeout`` seconds
        (``LockTimeoutError``). ``@lock`` on a function runs each call under the lock; ``@lock(timeout=2)``
        too, with a timeout."""
        if callable(timeout):
            return self._decorate(timeout)
        return self._guard(timeout, lease_ms, lease_s)

    def _decorate(self, fn: F) -> F:
        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with self:
                return fn(*args, **kwargs)

        return locked  # type: ignore[return-value]

    @contextlib.contextmanager
    def _guard(self: LockT, timeout: float | None, lease_ms: int | None, lease_s: float | None) -> Iterator[LockT]:
        if not self.acquire(True, timeout, lease_ms, lease_s=lease_s):
            raise LockTimeoutError(f"{self.name!r} not acquired within {timeout} s; retry or raise the timeout")
        try:
            yield self
        finally:
            self.release()


Locks.lock_class = Lock


# Locks.semaphore_class is set by distkit.locks.semaphore (it subclasses this module's types): import it here so
# `from distkit.locks.lock import Locks` alone (what the lazy package import does) gives a complete Locks
from distkit.locks import semaphore as _semaphore  # noqa: E402, F401
