"""asyncio twins: :class:`AsyncLocks`, :class:`AsyncLock`, :class:`AsyncSemaphore`.

The owner is the current asyncio task. Same flows, scripts and semantics as the sync classes; the
watchdog and the pub/sub listener are tasks in the loop that first needed them (use one ``AsyncLocks`` per
event loop). Cancelling a waiting ``acquire`` leaves no queue entry and no subscription behind.

>>> alocks = AsyncLocks(redis.asyncio.Redis(), namespace="app")        # doctest: +SKIP
>>> async with alocks.lock("order:42"):                                # doctest: +SKIP
...     ...
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from distkit.errors import LockTimeoutError
from distkit.locks.base import LocksBase, LockView, SemaphoreView
from distkit.locks.holds import task_alive, task_serial
from distkit.locks.lock import unavailable
from distkit.locks.ops import Call, Flow, adrive
from distkit.locks.waiters import AsyncHub
from distkit.locks.watchdog import AsyncWatchdog

T = TypeVar("T")
ALockT = TypeVar("ALockT", bound="AsyncLock")


class AsyncLocks(LocksBase["AsyncLock", "AsyncSemaphore"]):
    """:class:`~distkit.locks.Locks` for ``redis.asyncio`` clients (``Redis`` or ``RedisCluster``).

    >>> alocks = AsyncLocks(client, namespace="app")                  # doctest: +SKIP
    >>> async with alocks.lock("order:42") as lock:                   # doctest: +SKIP
    ...     await save(order, fencing_token=lock.fencing_token)
    """

    lock_class: type[AsyncLock]
    semaphore_class: type[AsyncSemaphore]

    owner_fns = (task_serial, task_alive)  # the owner is the current asyncio task
    hub_class, watchdog_class = AsyncHub, AsyncWatchdog

    def _script(self, op: Call) -> Any:
        return op.script.acall(self.client, op.keys, op.args)

    async def run(self, flow: Flow[T]) -> T:
        """Run a flow awaiting its I/O; Redis connection errors become ``BackendUnavailableError``."""
        try:
            return await adrive(flow, self.execute)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise unavailable(exc) from exc

    async def aclose(self) -> None:
        """Stop the watchdog and listener tasks; further acquires raise. Held locks expire on their lease."""
        self.closed = True
        await self.watchdog.stop()
        await self.hub.close()

    async def __aenter__(self) -> AsyncLocks:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncLock(LockView):
    """The asyncio :class:`~distkit.locks.Lock`: ``async with lock:`` / ``async with lock(timeout=2):``."""

    _locks: AsyncLocks

    async def acquire(self, blocking: bool = True, timeout: float | None = None, lease_ms: int | None = None) -> bool:
        """See :meth:`distkit.locks.Lock.acquire`; the owner is the current task."""
        return await self._locks.run(self._acquire(blocking, timeout, lease_ms))

    async def release(self) -> None:
        """See :meth:`distkit.locks.Lock.release`."""
        await self._locks.run(self._release())

    async def is_locked(self) -> bool:
        return (await self._locks.run(self._state()))[0]

    async def is_held_by_current(self) -> bool:
        return (await self._locks.run(self._state()))[1]

    async def __aenter__(self: ALockT) -> ALockT:
        await self.acquire()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()

    @contextlib.asynccontextmanager
    async def __call__(
        self: ALockT, timeout: float | None = None, lease_ms: int | None = None
    ) -> AsyncIterator[ALockT]:
        if not await self.acquire(True, timeout, lease_ms):
            raise LockTimeoutError(f"{self.name!r} not acquired within {timeout} s; retry or raise the timeout")
        try:
            yield self
        finally:
            await self.release()


class AsyncSemaphore(SemaphoreView):
    """The asyncio :class:`~distkit.locks.Semaphore`."""

    _locks: AsyncLocks

    async def acquire(
        self, blocking: bool = True, timeout: float | None = None, lease_ms: int | None = None
    ) -> str | None:
        return await self._locks.run(self._acquire(blocking, timeout, lease_ms))

    async def release(self, permit: str) -> None:
        await self._locks.run(self._release(permit))

    async def available_permits(self) -> int:
        return await self._locks.run(self._available())

    async def __aenter__(self) -> str:
        return self._push(await self.acquire())

    async def __aexit__(self, *exc: object) -> None:
        await self.release(self._pop())

    @contextlib.asynccontextmanager
    async def __call__(self, timeout: float | None = None, lease_ms: int | None = None) -> AsyncIterator[str]:
        permit = await self.acquire(True, timeout, lease_ms)
        if permit is None:
            raise LockTimeoutError(f"no permit of {self.name!r} within {timeout} s; retry or raise the timeout")
        try:
            yield permit
        finally:
            await self.release(permit)


AsyncLocks.lock_class = AsyncLock
AsyncLocks.semaphore_class = AsyncSemaphore
