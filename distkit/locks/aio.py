"""asyncio twins: :class:`AsyncLocks`, :class:`AsyncLock`, :class:`AsyncSemaphore`.

The owner is the asyncio task that *calls* a method (``lock.acquire()`` takes the owner when it is called,
not when the coroutine runs), so ``await asyncio.wait_for(lock.acquire(), 2)``, ``asyncio.gather`` and
``asyncio.shield``, which run the coroutine in a task of their own on Python 3.10 / 3.11, still give the lock
to the caller. Same flows, scripts and semantics as the sync classes; the watchdog and the pub/sub listener
are tasks in the loop that first needed them (use one ``AsyncLocks`` per event loop). Cancelling a waiting
``acquire`` leaves no queue entry and no subscription behind.

>>> alocks = AsyncLocks(redis.asyncio.Redis(), namespace="app")        # doctest: +SKIP
>>> async with alocks.lock("order:42"):                                # doctest: +SKIP
...     ...
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from distkit._otel import add_event, tracer_for
from distkit._redis import AsyncRunner
from distkit._types import AsyncRedisLike
from distkit.errors import BackendUnavailableError, InvalidArgumentError, LockTimeoutError
from distkit.locks.base import LocksBase, LockView, SemaphoreView, check_units
from distkit.locks.holds import Hold, in_task, task_alive, task_serial
from distkit.locks.lock import map_error
from distkit.locks.ops import Call, Flow, Step
from distkit.locks.waiters import AsyncHub
from distkit.locks.watchdog import AsyncWatchdog, report_lost_in_loop

if TYPE_CHECKING:
    from distkit.locks.multi import AsyncMultiLock

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
ALockT = TypeVar("ALockT", bound="AsyncLock")


async def _later(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Called outside any task (``asyncio.run(lock.acquire())``): the task that runs the coroutine is the owner."""
    return await make()


def _owned(make: Callable[[], Coroutine[Any, Any, T]]) -> Coroutine[Any, Any, T]:
    """Take the owner now (the calling task), or when the coroutine starts if there is no calling task."""
    return make() if in_task() else _later(make)


class AsyncLocks(LocksBase["AsyncLock", "AsyncSemaphore", AsyncRedisLike]):
    """:class:`~distkit.locks.Locks` for ``redis.asyncio`` clients (``Redis`` or ``RedisCluster``).

    >>> alocks = AsyncLocks(client, namespace="app")                  # doctest: +SKIP
    >>> async with alocks.lock("order:42") as lock:                   # doctest: +SKIP
    ...     await save(order, fencing_token=lock.fencing_token)
    """

    lock_class: type[AsyncLock]
    semaphore_class: type[AsyncSemaphore]

    owner_fns = (task_serial, task_alive)  # the owner is the current asyncio task
    async_client = True
    hub_class, watchdog_class, runner_class = AsyncHub, AsyncWatchdog, AsyncRunner

    def report_lost(self, hold: Hold) -> None:
        report_lost_in_loop(hold)

    async def run(self, flow: Flow[T], name: str = "") -> T:
        """Run a flow awaiting its I/O; outages become ``BackendUnavailableError``, ``WRONGTYPE`` a
        ``LockConfigConflictError``."""
        # adrive, inlined with a fast path for script calls (the hot path: two per acquire + release cycle)
        runner, execute = self.runner, self.execute
        step = Step(flow)
        try:
            while step.running:
                op = step.op
                try:
                    if op.__class__ is Call:
                        value = await runner(op.script, op.keys, op.args, deadline=op.deadline)
                    else:
                        value = await execute(op)
                except BaseException as exc:  # CancelledError included: the flow cleans up, then re-raises
                    step.feed(None, exc)
                else:
                    step.feed(value, None)
            return step.result
        except (BackendUnavailableError, RedisConnectionError, RedisTimeoutError, OSError, ResponseError) as exc:
            typed = map_error(exc, name)
            if typed is None:
                raise
            raise typed from exc

    def multi_lock(self, *locks: str | AsyncLock) -> AsyncMultiLock:
        """See :meth:`distkit.locks.Locks.multi_lock`."""
        from distkit.locks.multi import AsyncMultiLock

        return AsyncMultiLock([self.lock(x) if isinstance(x, str) else x for x in locks])

    async def aclose(self) -> None:
        """Stop the watchdog and listener tasks; further acquires raise ``LocksClosedError``, and so do acquires
        blocked right now. Held locks expire on their lease."""
        self.closed = True
        self.hub.wake_all()
        await self.watchdog.stop()
        await self.hub.close()
        await self.runner.aclose()

    async def __aenter__(self) -> AsyncLocks:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncLock(LockView):
    """The asyncio :class:`~distkit.locks.Lock`: ``async with lock:`` / ``async with lock(timeout=2):`` /
    ``@alocks.lock("x")`` on an ``async def``. Every method takes the calling task as the owner when it is
    called (see the module docstring)."""

    _locks: AsyncLocks

    def acquire(
        self,
        blocking: bool = True,
        timeout: float | None = None,
        lease_ms: int | None = None,
        *,
        lease_s: float | None = None,
    ) -> Coroutine[Any, Any, bool]:
        """See :meth:`distkit.locks.Lock.acquire`; the owner is the task that called ``acquire()``."""
        coro = _owned(lambda: self._locks.run(self._acquire(blocking, timeout, lease_ms, lease_s), self.name))
        return coro if tracer_for(None) is None else _evented(coro, self.name)

    def release(self) -> Coroutine[Any, Any, bool]:
        """See :meth:`distkit.locks.Lock.release`."""
        return _owned(lambda: self._locks.run(self._release(), self.name))

    def try_release(self) -> Coroutine[Any, Any, bool]:
        """See :meth:`distkit.locks.Lock.try_release`."""
        return _owned(lambda: self._locks.run(self._release(quiet=True), self.name))

    async def is_locked(self) -> bool:
        return (await self._locks.run(self._state(), self.name))[0]

    def is_held_by_current(self) -> Coroutine[Any, Any, bool]:
        return _owned(lambda: self._held(self._state()))

    def is_held_by(self, owner: str) -> Coroutine[Any, Any, bool]:
        """Held by ``owner`` (an id from :meth:`AsyncLocks.holder`), according to Redis."""
        return self._held(self._state(owner))

    async def _held(self, flow: Flow[tuple[bool, bool]]) -> bool:
        return (await self._locks.run(flow, self.name))[1]

    def remaining_lease_ms(self) -> Coroutine[Any, Any, int | None]:
        return self._locks.run(self._remaining(), self.name)

    def extend(self, lease_ms: int | None = None, *, lease_s: float | None = None) -> Coroutine[Any, Any, None]:
        return _owned(lambda: self._locks.run(self._extend(lease_ms, lease_s), self.name))

    def force_unlock(self) -> Coroutine[Any, Any, bool]:
        return self._locks.run(self._force_unlock(), self.name)

    async def __aenter__(self: ALockT) -> ALockT:
        await self.acquire()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()

    @overload
    def __call__(self, timeout: F, /) -> F: ...

    @overload
    def __call__(
        self: ALockT, timeout: float | None = None, lease_ms: int | None = None, *, lease_s: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[ALockT]: ...

    def __call__(self, timeout: Any = None, lease_ms: int | None = None, *, lease_s: float | None = None) -> Any:
        if callable(timeout):
            return self._decorate(timeout)
        return self._guard(timeout, lease_ms, lease_s)

    def _decorate(self, fn: F) -> F:
        if not inspect.iscoroutinefunction(fn):
            raise InvalidArgumentError(f"@{self!r} decorates an async def; {fn!r} is not one (use Locks for sync code)")

        @functools.wraps(fn)
        async def locked(*args: Any, **kwargs: Any) -> Any:
            async with self:
                return await fn(*args, **kwargs)

        return locked  # type: ignore[return-value]

    @contextlib.asynccontextmanager
    async def _guard(
        self: ALockT, timeout: float | None, lease_ms: int | None, lease_s: float | None
    ) -> AsyncIterator[ALockT]:
        if not await self.acquire(True, timeout, lease_ms, lease_s=lease_s):
            raise LockTimeoutError(f"{self.name!r} not acquired within {timeout} s; retry or raise the timeout")
        try:
            yield self
        finally:
            await self.release()


class AsyncSemaphore(SemaphoreView):
    """The asyncio :class:`~distkit.locks.Semaphore`."""

    _locks: AsyncLocks

    def acquire(
        self,
        blocking: bool | int = True,
        timeout: float | None = None,
        lease_ms: int | None = None,
        *,
        lease_s: float | None = None,
        permits: int = 1,
    ) -> Coroutine[Any, Any, str | None]:
        return _owned(
            lambda: self._locks.run(self._acquire(blocking, timeout, lease_ms, lease_s, permits), self.name)  # type: ignore[arg-type]
        )

    def release(self, permit: str, permits: int | None = None) -> Coroutine[Any, Any, None]:
        return self._locks.run(self._release(permit, permits), self.name)

    def available(self) -> Coroutine[Any, Any, int]:
        return self._locks.run(self._available(), self.name)

    available_permits = available

    def drain(self) -> Coroutine[Any, Any, int]:
        return self._locks.run(self._adjust("drain", 0), self.name)

    def add_permits(self, n: int) -> Coroutine[Any, Any, int]:
        if isinstance(n, bool) or not isinstance(n, int):
            check_units(n)
        return self._locks.run(self._adjust("add", n), self.name)

    async def __aenter__(self) -> str:
        return self._push(await self.acquire())

    async def __aexit__(self, *exc: object) -> None:
        await self.release(self._pop())

    @contextlib.asynccontextmanager
    async def __call__(
        self,
        timeout: float | None = None,
        lease_ms: int | None = None,
        *,
        lease_s: float | None = None,
        permits: int = 1,
    ) -> AsyncIterator[str]:
        permit = await self.acquire(True, timeout, lease_ms, lease_s=lease_s, permits=permits)
        if permit is None:
            raise LockTimeoutError(f"no permit of {self.name!r} within {timeout} s; retry or raise the timeout")
        try:
            yield permit
        finally:
            await self.release(permit)


AsyncLocks.lock_class = AsyncLock
AsyncLocks.semaphore_class = AsyncSemaphore


async def _evented(acquire: Coroutine[Any, Any, bool], name: str) -> bool:
    """An acquire whose outcome and wait are recorded on the caller's span (only when a tracer is configured)."""
    t0 = time.monotonic()
    ok = await acquire
    add_event("distkit.lock.acquire", {"lock": name, "acquired": ok, "wait_ms": (time.monotonic() - t0) * 1e3})
    return ok
