"""All-or-nothing over several locks (Redisson's ``RedissonMultiLock``), sync and asyncio.

The locks are taken one by one in a single global order (their Redis keys, sorted), whatever order the
caller listed them in, so two callers asking for overlapping sets can never deadlock on each other. If one
lock cannot be had (timeout, try-lock, error, cancellation), the ones already taken are released before
``acquire`` returns False or raises: the caller holds all of them or none.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from distkit.errors import InvalidArgumentError, LockLostError, LockTimeoutError
from distkit.locks.holds import in_task

if TYPE_CHECKING:
    from distkit.locks.aio import AsyncLock
    from distkit.locks.base import LockView
    from distkit.locks.lock import Lock

F = TypeVar("F", bound=Callable[..., Any])


def _ordered(locks: Sequence[Any]) -> list[Any]:
    if not locks:
        raise InvalidArgumentError("a MultiLock needs at least one lock")
    by_key: dict[str, Any] = {}
    for lock in locks:
        by_key.setdefault(lock._spec.hold_key, lock)  # the same lock twice would only re-enter it
    return [by_key[k] for k in sorted(by_key)]


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class _MultiBase:
    def __init__(self, locks: Sequence[LockView]) -> None:
        self.locks = _ordered(locks)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({[lock.name for lock in self.locks]!r})"

    @property
    def names(self) -> list[str]:
        return [lock.name for lock in self.locks]


class MultiLock(_MultiBase):
    """Several :class:`~distkit.locks.Lock` objects taken and released as one (``locks.multi_lock(...)``)."""

    locks: list[Lock]

    def acquire(
        self, blocking: bool = True, timeout: float | None = None, lease_ms: int | None = None, *,
        lease_s: float | None = None,
    ) -> bool:
        """Take every lock (in key order) within ``timeout`` seconds in all, or none of them."""
        deadline = None if timeout is None else time.monotonic() + timeout
        taken: list[Lock] = []
        try:
            for lock in self.locks:
                wait = _remaining(deadline) if blocking else None
                if not lock.acquire(blocking, wait, lease_ms, lease_s=lease_s):
                    break
                taken.append(lock)
            else:
                return True
        except BaseException:
            for lock in reversed(taken):
                lock.try_release()
            raise
        for lock in reversed(taken):
            lock.try_release()
        return False

    def release(self) -> None:
        """Release every lock (reverse order); if one was lost, the others are still released and
        ``LockLostError`` is raised at the end."""
        lost: list[str] = []
        for lock in reversed(self.locks):
            if not lock.try_release():
                lost.append(lock.name)
        if lost:
            raise LockLostError(f"MultiLock: {lost!r} were not held any more (lost, or never acquired)")

    def __enter__(self) -> MultiLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __call__(self, timeout: Any = None, lease_ms: int | None = None, *, lease_s: float | None = None) -> Any:
        """``with multi(timeout=2):`` (``LockTimeoutError``), ``@multi`` or ``@multi(timeout=2)``."""
        if callable(timeout):
            fn = timeout

            @functools.wraps(fn)
            def locked(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return fn(*args, **kwargs)

            return locked
        return self._guard(timeout, lease_ms, lease_s)

    @contextlib.contextmanager
    def _guard(self, timeout: float | None, lease_ms: int | None, lease_s: float | None) -> Iterator[MultiLock]:
        if not self.acquire(True, timeout, lease_ms, lease_s=lease_s):
            raise LockTimeoutError(f"{self.names!r} not all acquired within {timeout} s; retry or raise the timeout")
        try:
            yield self
        finally:
            self.release()


class AsyncMultiLock(_MultiBase):
    """The asyncio :class:`MultiLock` (the owner is the task that calls ``acquire()``)."""

    locks: list[AsyncLock]

    def acquire(
        self, blocking: bool = True, timeout: float | None = None, lease_ms: int | None = None, *,
        lease_s: float | None = None,
    ) -> Coroutine[Any, Any, bool]:
        if not in_task():  # asyncio.run(multi.acquire()): the task running it is the owner
            return self._acquire(None, blocking, timeout, lease_ms, lease_s)
        owners = [lock.owner() for lock in self.locks]
        return self._acquire(owners, blocking, timeout, lease_ms, lease_s)

    async def _acquire(
        self,
        owners: list[Any] | None,
        blocking: bool,
        timeout: float | None,
        lease_ms: int | None,
        lease_s: float | None,
    ) -> bool:
        if owners is None:
            owners = [lock.owner() for lock in self.locks]
        deadline = None if timeout is None else time.monotonic() + timeout
        taken: list[tuple[AsyncLock, str]] = []
        try:
            for lock, owner in zip(self.locks, owners, strict=True):
                wait = _remaining(deadline) if blocking else None
                flow = lock._acquire(blocking, wait, lease_ms, lease_s, owner=owner)
                if not await lock._locks.run(flow, lock.name):
                    break
                taken.append((lock, owner[0]))
            else:
                return True
        except BaseException:
            await self._undo(taken)
            raise
        await self._undo(taken)
        return False

    @staticmethod
    async def _undo(taken: list[tuple[AsyncLock, str]]) -> None:
        for lock, holder in reversed(taken):
            with contextlib.suppress(Exception):
                await lock._locks.run(lock._release(quiet=True, holder=holder), lock.name)

    def release(self) -> Coroutine[Any, Any, None]:
        return self._release([lock._locks.holder() for lock in self.locks] if in_task() else None)

    async def _release(self, holders: list[str] | None) -> None:
        if holders is None:
            holders = [lock._locks.holder() for lock in self.locks]
        lost: list[str] = []
        for lock, holder in reversed(list(zip(self.locks, holders, strict=True))):
            if not await lock._locks.run(lock._release(quiet=True, holder=holder), lock.name):
                lost.append(lock.name)
        if lost:
            raise LockLostError(f"MultiLock: {lost!r} were not held any more (lost, or never acquired)")

    async def __aenter__(self) -> AsyncMultiLock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    def __call__(self, timeout: Any = None, lease_ms: int | None = None, *, lease_s: float | None = None) -> Any:
        if callable(timeout):
            fn = timeout
            if not inspect.iscoroutinefunction(fn):
                raise InvalidArgumentError(f"@{self!r} decorates an async def; {fn!r} is not one")

            @functools.wraps(fn)
            async def locked(*args: Any, **kwargs: Any) -> Any:
                async with self:
                    return await fn(*args, **kwargs)

            return locked
        return self._guard(timeout, lease_ms, lease_s)

    @contextlib.asynccontextmanager
    async def _guard(
        self, timeout: float | None, lease_ms: int | None, lease_s: float | None
    ) -> AsyncIterator[AsyncMultiLock]:
        if not await self.acquire(True, timeout, lease_ms, lease_s=lease_s):
            raise LockTimeoutError(f"{self.names!r} not all acquired within {timeout} s; retry or raise the timeout")
        try:
            yield self
        finally:
            await self.release()
