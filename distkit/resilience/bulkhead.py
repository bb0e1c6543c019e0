"""``Bulkhead``: cap how many calls run at once in this process (resilience4j's semaphore bulkhead, Sentinel's
thread-count rule), with a bounded wait. One cap is shared by sync and asyncio callers of the same bulkhead."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from distkit.errors import BulkheadFullError, InvalidBreakerConfigError
from distkit.resilience.metrics import EventHook, Recorder

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class BulkheadMetrics:
    name: str
    max_concurrent: int
    in_flight: int
    waiting: int
    peak_in_flight: int
    rejected: int


class Bulkhead:
    """At most ``max_concurrent`` calls in flight; a call that finds it full waits up to ``max_wait_s`` (FIFO)
    and then raises :class:`~distkit.errors.BulkheadFullError` without running.

    >>> bulkhead = Bulkhead("payment-api", max_concurrent=16, max_wait_s=0.05)  # doctest: +SKIP
    >>> @bulkhead
    ... async def call_payment_api(order): ...

    Use it as a decorator (sync or ``async def``), ``with bulkhead:`` or ``async with bulkhead:``."""

    def __init__(
        self, name: str, *, max_concurrent: int = 16, max_wait_s: float = 0.0, on_event: EventHook | None = None
    ) -> None:
        if not isinstance(max_concurrent, int) or isinstance(max_concurrent, bool) or max_concurrent < 1:
            raise InvalidBreakerConfigError(f"max_concurrent must be an int >= 1, got {max_concurrent!r}")
        if not isinstance(max_wait_s, (int, float)) or not max_wait_s >= 0:
            raise InvalidBreakerConfigError(f"max_wait_s must be >= 0 seconds, got {max_wait_s!r}")
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_wait_s = float(max_wait_s)
        self._lock = threading.Lock()
        self._free = max_concurrent
        self._waiters: deque[Any] = deque()  # a locked threading.Lock (sync) or (loop, future) (asyncio)
        self._peak = 0
        self._rejected = 0
        self._events = Recorder(name, "bulkhead", on_event)

    # ------------------------------------------------------------------ slots

    def _take(self) -> bool:
        """Under the lock: a free slot if nobody queues before us."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            self._peak = max(self._peak, self.max_concurrent - self._free)
            return True
        return False

    def _full(self, waited: float) -> BulkheadFullError:
        with self._lock:
            self._rejected += 1
        self._events.rejected("FULL", time.time_ns() // 1_000_000)
        return BulkheadFullError(self.name, self.max_concurrent, waited)

    def acquire(self) -> None:
        """Take a slot (waiting up to ``max_wait_s``) or raise ``BulkheadFullError``."""
        lock = self._lock
        lock.acquire()
        if self._free > 0 and not self._waiters:  # the fast path, inlined _take()
            self._free -= 1
            if self.max_concurrent - self._free > self._peak:  # noqa: PLR1730 (no max() call on the hot path)
                self._peak = self.max_concurrent - self._free
            lock.release()
            return
        lock.release()
        with self._lock:
            if self._take():
                return
            if self.max_wait_s <= 0:
                waiter = None
            else:
                waiter = threading.Lock()
                waiter.acquire()
                self._waiters.append(waiter)
        if waiter is None:
            raise self._full(0.0)
        t0 = time.monotonic()
        if waiter.acquire(timeout=self.max_wait_s):
            return  # handed over by release()
        with self._lock:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                return  # release() handed us the slot just as we timed out: it is ours
        raise self._full(time.monotonic() - t0)

    async def aacquire(self) -> None:
        """Asyncio twin of :meth:`acquire` (waits without blocking the loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._take():
                return
            if self.max_wait_s <= 0:
                fut = None
            else:
                fut = loop.create_future()
                self._waiters.append((loop, fut))
        if fut is None:
            raise self._full(0.0)
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.max_wait_s)
            return
        except asyncio.TimeoutError:
            if self._give_up(loop, fut, cancelled=False):
                return
        except asyncio.CancelledError:
            self._give_up(loop, fut, cancelled=True)
            raise
        raise self._full(time.monotonic() - t0)

    def _give_up(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[bool], *, cancelled: bool) -> bool:
        """An asyncio waiter stops waiting. True if it holds a slot after all (handed over as it timed out)."""
        with self._lock:
            try:
                self._waiters.remove((loop, fut))
                return False
            except ValueError:
                pass  # release() popped us: a slot is ours or on its way
        if fut.done() and not fut.cancelled():
            if cancelled:
                self.release()
                return False
            return True
        fut.cancel()  # _grant sees it and passes the slot on
        return False

    def release(self) -> None:
        """Give the slot back: to the longest waiter (sync or asyncio), else to the pool."""
        lock = self._lock
        lock.acquire()
        if not self._waiters:  # the fast path
            self._free += 1
            lock.release()
            return
        lock.release()
        with self._lock:
            while self._waiters:
                w = self._waiters.popleft()
                if isinstance(w, tuple):
                    loop, fut = w
                    if fut.done():
                        continue
                    try:
                        loop.call_soon_threadsafe(self._grant, fut)
                    except RuntimeError:  # its loop is closed
                        continue
                    return
                w.release()
                return
            self._free += 1

    def _grant(self, fut: asyncio.Future[bool]) -> None:
        if fut.done():  # cancelled meanwhile: pass the slot on
            self.release()
        else:
            fut.set_result(True)

    def metrics(self) -> BulkheadMetrics:
        with self._lock:
            return BulkheadMetrics(
                self.name,
                self.max_concurrent,
                self.max_concurrent - self._free,
                len(self._waiters),
                self._peak,
                self._rejected,
            )

    # ------------------------------------------------------------------ use

    def __enter__(self) -> Bulkhead:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> Bulkhead:
        await self.aacquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def acall(*args: Any, **kwargs: Any) -> Any:
                await self.aacquire()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    self.release()

            return cast(F, acall)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            self.acquire()
            try:
                return fn(*args, **kwargs)
            finally:
                self.release()

        return cast(F, call)

    def __repr__(self) -> str:
        return f"Bulkhead({self.name!r}, max_concurrent={self.max_concurrent}, max_wait_s={self.max_wait_s})"
