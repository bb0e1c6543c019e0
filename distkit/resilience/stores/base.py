"""The contract between a :class:`~distkit.resilience.CircuitBreaker` and a shared store.

A store keeps one breaker's *shared* window counters and state. The breaker never waits on it in CLOSED: it
counts locally and a flusher (a daemon thread the store owns) calls :meth:`BreakerStore.flush` for every
attached breaker each ``flush_s``, sending the growth of the local counters and getting the shared view back.
HALF_OPEN probes go through :meth:`BreakerStore.acquire_probe` / :meth:`BreakerStore.record_probe`, so their
budget is global. Any store error makes the breaker run on its local statistics until the store answers again.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

from distkit.resilience.breaker import BreakerConfig, State


@dataclass(frozen=True)
class View:
    """The shared state as the store saw it: ``calls/failed/slow`` are the shared window's totals."""

    state: State
    epoch: int
    remaining_open_ms: int
    forced: bool
    calls: int
    failed: int
    slow: int
    granted: bool = False


class BreakerStore(Protocol):
    flush_s: float | None

    def flush(
        self, name: str, cfg: BreakerConfig, delta: tuple[int, int, int], trip_epoch: int | None
    ) -> View: ...  # add delta to the current bucket; trip if still CLOSED at trip_epoch; evaluate; answer

    def acquire_probe(self, name: str, cfg: BreakerConfig) -> View: ...  # granted=True: one of the global probes

    def record_probe(self, name: str, cfg: BreakerConfig, epoch: int, failed: bool, slow: bool) -> View: ...

    def release_probe(self, name: str, cfg: BreakerConfig, epoch: int) -> View: ...

    def control(self, name: str, cfg: BreakerConfig, op: str) -> View: ...  # op: "force_open" | "reset"

    def attach(self, breaker: Any) -> None: ...

    def detach(self, breaker: Any) -> None: ...


_FLUSHERS: weakref.WeakSet[Flusher] = weakref.WeakSet()


def _restart_in_child() -> None:
    for f in list(_FLUSHERS):
        f._forked()


os.register_at_fork(after_in_child=_restart_in_child)


class AsyncBreakerStore(Protocol):
    """The asyncio twin of :class:`BreakerStore` (``is_async = True``; every operation is awaited)."""

    is_async: bool
    flush_s: float | None

    async def flush(
        self, name: str, cfg: BreakerConfig, delta: tuple[int, int, int], trip_epoch: int | None
    ) -> View: ...

    async def acquire_probe(self, name: str, cfg: BreakerConfig) -> View: ...

    async def record_probe(self, name: str, cfg: BreakerConfig, epoch: int, failed: bool, slow: bool) -> View: ...

    async def release_probe(self, name: str, cfg: BreakerConfig, epoch: int) -> View: ...

    async def control(self, name: str, cfg: BreakerConfig, op: str) -> View: ...

    def attach(self, breaker: Any) -> None: ...

    def detach(self, breaker: Any) -> None: ...


class Flusher:
    """The store's daemon thread: every ``flush_s`` it calls ``breaker.flush()`` on each attached breaker (and at
    once when a breaker trips locally, via :meth:`wake`). Re-created lazily after ``fork``; stopped by
    :meth:`stop` (the store's ``close()``)."""

    def __init__(self, flush_s: float | None, name: str) -> None:
        self.flush_s = flush_s
        self._name = name
        self._breakers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        _FLUSHERS.add(self)

    def _forked(self) -> None:
        """In a forked child: the parent's thread is gone; start this process's own if breakers are attached."""
        self._pid = os.getpid()
        self._thread = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        if len(self._breakers):
            self._ensure()

    def attach(self, breaker: Any) -> None:
        self._breakers.add(breaker)
        self._ensure()

    def detach(self, breaker: Any) -> None:
        self._breakers.discard(breaker)

    def wake(self) -> None:
        self._ensure()
        self._wake.set()

    def _ensure(self) -> None:
        if self.flush_s is None or self._stop.is_set():
            return
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._pid != os.getpid():  # forked child: the parent's thread does not exist here
                self._pid = os.getpid()
                self._thread = None
                self._lock = threading.Lock()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=f"distkit-breaker-{self._name}", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        assert self.flush_s is not None
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            for b in list(self._breakers):
                try:
                    b._auto_flush()
                except Exception:  # flush maps store errors itself; anything else must not kill the thread
                    from distkit.resilience.metrics import log

                    log.exception("distkit.resilience: flush of breaker %r failed", getattr(b, "name", b))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        t = self._thread
        if t is not None and t.is_alive() and t is not threading.current_thread() and self._pid == os.getpid():
            t.join(timeout=5)


class AsyncFlusher:
    """The asyncio twin of :class:`Flusher`: a task of one event loop awaiting ``breaker.aflush()``."""

    def __init__(self, flush_s: float | None, name: str) -> None:
        self.flush_s = flush_s
        self._name = name
        self._breakers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopped = False

    def attach(self, breaker: Any) -> None:
        self._breakers.add(breaker)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: `async with store:` or `await store.start()` starts the task
        self.start()

    def detach(self, breaker: Any) -> None:
        self._breakers.discard(breaker)

    def start(self) -> None:
        if self.flush_s is None or self._stopped or (self._task is not None and not self._task.done()):
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name=f"distkit-breaker-{self._name}")

    def wake(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    async def _run(self) -> None:
        assert self.flush_s is not None and self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            for b in list(self._breakers):
                try:
                    await b._aauto_flush()
                except Exception:  # aflush maps store errors itself; anything else must not kill the task
                    from distkit.resilience.metrics import log

                    log.exception("distkit.resilience: flush of breaker %r failed", getattr(b, "name", b))

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
