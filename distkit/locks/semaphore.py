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
from distkit.locks.base import SemaphoreView, check_units
from distkit.locks.lock import Locks


class Semaphore(SemaphoreView):
    """At most ``permits`` permits out at once; permits are ids, released by id, and expire on their lease."""

    _locks: Locks

    def acquire(
        self,
        blocking: bool | int = True,
        timeout: float | None = None,
        lease_ms: int | None = None,
        *,
        lease_s: float | None = None,
        permits: int = 1,
    ) -> str | None:
        """A permit id, or None when not enough permits were free (``blocking=False``, or ``timeout`` seconds
        passed). ``acquire(3)`` / ``acquire(permits=3)``: one id standing for 3 permits, taken all at once."""
        return self._locks.run(self._acquire(blocking, timeout, lease_ms, lease_s, permits), self.name)  # type: ignore[arg-type]

    def release(self, permit: str, permits: int | None = None) -> None:
        """Give a permit back (from any thread or process); ``permits=n`` gives back n of a multi-permit id
        and keeps the rest. Raises :class:`~distkit.errors.LockNotOwnedError` when it is not held any more."""
        self._locks.run(self._release(permit, permits), self.name)

    def available(self) -> int:
        """Permits free right now, as Redis counts them (the same answer in every process)."""
        return self._locks.run(self._available(), self.name)

    available_permits = available

    def drain(self) -> int:
        """Take every free permit away (Redisson's ``drainPermits``); returns how many. Permits out now come
        back when released."""
        return self._locks.run(self._adjust("drain", 0), self.name)

    def add_permits(self, n: int) -> int:
        """Change the permit count by ``n`` (negative removes); returns the new count. Stored in Redis for
        every process, and kept ``config_ttl_ms`` after the last permit is released."""
        if isinstance(n, bool) or not isinstance(n, int):
            check_units(n)
        return self._locks.run(self._adjust("add", n), self.name)

    def __enter__(self) -> str:
        return self._push(self.acquire())

    def __exit__(self, *exc: object) -> None:
        self.release(self._pop())

    @contextlib.contextmanager
    def __call__(
        self,
        timeout: float | None = None,
        lease_ms: int | None = None,
        *,
        lease_s: float | None = None,
        permits: int = 1,
    ) -> Iterator[str]:
        """``with pool(timeout=2) as permit:`` raises :class:`~distkit.errors.LockTimeoutError` on timeout."""
        permit = self.acquire(True, timeout, lease_ms, lease_s=lease_s, permits=permits)
        if permit is None:
            raise LockTimeoutError(f"no permit of {self.name!r} within {timeout} s; retry or raise the timeout")
        try:
            yield permit
        finally:
            self.release(permit)


Locks.semaphore_class = Semaphore
