"""Synchronous expirable-permit semaphore (``locks.semaphore(name, permits)``).

>>> pool = locks.semaphore("db-pool", permits=10, lease_ms=60_000)     # doctest: +SKIP
>>> permit = pool.acquire(timeout=5)                                   # doctest: +SKIP
>>> try:                                                               # doctest: +SKIP
...     query()
... finally:
...     pool.release(permit)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from distkit.errors import LockTimeoutError
from distkit.locks.base import SemaphoreView
from distkit.locks.lock import Locks


class Semaphore(SemaphoreView):
    """At most ``permits`` holders at once; permits are ids, released by id, and expire on their lease."""

    _locks: Locks

    def acquire(self, blocking: bool = True, timeout: float | None = None, lease_ms: int | None = None) -> str | None:
        """A permit id, or None when none was free (``blocking=False``, or ``timeout`` seconds passed)."""
        return self._locks.run(self._acquire(blocking, timeout, lease_ms))

    def release(self, permit: str) -> None:
        """Give a permit back (from any thread or process). Raises
        :class:`~distkit.errors.LockNotOwnedError` when it is not held any more."""
        self._locks.run(self._release(permit))

    def available_permits(self) -> int:
        """Permits free right now (one round trip)."""
        return self._locks.run(self._available())

    def __enter__(self) -> str:
        return self._push(self.acquire())

    def __exit__(self, *exc: object) -> None:
        self.release(self._pop())

    @contextlib.contextmanager
    def __call__(self, timeout: float | None = None, lease_ms: int | None = None) -> Iterator[str]:
        """``with pool(timeout=2) as permit:`` raises :class:`~distkit.errors.LockTimeoutError` on timeout."""
        permit = self.acquire(True, timeout, lease_ms)
        if permit is None:
            raise LockTimeoutError(f"no permit of {self.name!r} within {timeout} s; retry or raise the timeout")
        try:
            yield permit
        finally:
            self.release(permit)


Locks.semaphore_class = Semaphore
