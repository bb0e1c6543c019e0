"""What every worker-id lease does, whatever stores it: acquire, heartbeat, detect loss, release, re-lease
after fork. Stores implement three small operations (:meth:`WorkerLease._try_acquire`, ``_renew``,
``_release``).

The high-water mark persisted with a lease is the generator's newest timestamp **plus the lease ttl**: a
holder can issue ids for at most one ttl after its last successful heartbeat before it considers the lease
lost, so the mark covers every id it may have issued, and a process restarted with a clock that went back
never repeats one.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from distkit.errors import InvalidArgumentError, WorkerLeaseLostError

if TYPE_CHECKING:
    from distkit.idgen.generator import IdGenerator

log = logging.getLogger(__name__)

OnLost = Callable[[str], None]


class WorkerLease:
    """Base class of :class:`RedisWorkerLease` and :class:`SqlWorkerLease`."""

    def __init__(self, *, namespace: str, max_worker_id: int, ttl_s: float, on_lost: OnLost | None) -> None:
        if not namespace:
            raise InvalidArgumentError("a worker lease needs a namespace (one per id space, e.g. 'orders')")
        if max_worker_id < 0:
            raise InvalidArgumentError(f"max_worker_id must be >= 0, got {max_worker_id}")
        if ttl_s <= 0:
            raise InvalidArgumentError(f"ttl_s must be > 0, got {ttl_s}")
        self.namespace = namespace
        self.max_worker_id = max_worker_id
        self.ttl_ms = int(ttl_s * 1000)
        self.on_lost = on_lost
        self.worker_id = -1
        self.high_water_ms = 0
        self._token = ""
        self._lost: str | None = None
        self._deadline = 0.0  # monotonic time after which, without a heartbeat, the lease is presumed lost
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gen: weakref.ref[IdGenerator] | None = None
        atexit.register(_close_ref(weakref.ref(self)))

    # -- store operations --------------------------------------------------------------------------
    def _try_acquire(self, token: str) -> tuple[int, int] | None:
        """Atomically take a free worker id: ``(worker_id, persisted high-water ms)`` or ``None``."""
        raise NotImplementedError

    def _renew(self, worker_id: int, token: str, high_water_ms: int) -> bool:
        """Extend the lease if ``token`` still holds it; persist the mark. False → the lease is gone."""
        raise NotImplementedError

    def _release(self, worker_id: int, token: str, high_water_ms: int) -> None:
        raise NotImplementedError

    def _reset_after_fork(self) -> None:
        """Drop connections inherited from the parent (override if the store needs it)."""

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def heartbeat_interval_s(self) -> float:
        return self.ttl_ms / 3000

    def acquire(self) -> int:
        """Lease a free worker id (raises :class:`~distkit.errors.WorkerIdExhaustedError` if none)."""
        from distkit.errors import WorkerIdExhaustedError

        token = uuid.uuid4().hex
        started = time.monotonic()
        got = self._try_acquire(token)
        if got is None:
            raise WorkerIdExhaustedError(
                f"all {self.max_worker_id + 1} worker ids of namespace {self.namespace!r} are leased by live "
                "processes; raise max_worker_id (within the layout's worker bits) or stop some"
            )
        self.worker_id, self.high_water_ms = got
        self._token = token
        self._lost = None
        self._deadline = started + self.ttl_ms / 1000
        return self.worker_id

    def bind(self, gen: IdGenerator) -> None:
        """Start heartbeating for ``gen`` (called by the generator)."""
        self._gen = weakref.ref(gen)
        self._start_thread()

    def _start_thread(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._heartbeat_loop, name=f"distkit-idgen-lease-{self.namespace}", daemon=True
        )
        self._thread.start()

    def check(self) -> None:
        """Raise :class:`~distkit.errors.WorkerLeaseLostError` if ids must not be issued any more."""
        if self._lost is None and time.monotonic() > self._deadline:
            self._mark_lost(f"no successful heartbeat for {self.ttl_ms} ms (store unreachable?)")
        if self._lost is not None:
            raise WorkerLeaseLostError(
                f"worker id {self.worker_id} of namespace {self.namespace!r} is no longer leased ({self._lost}); "
                "this generator stopped issuing ids to avoid duplicates. Create a new generator from a new lease"
            )

    def _mark_lost(self, reason: str) -> None:
        if self._lost is not None:
            return
        self._lost = reason
        self._stop.set()
        log.error("worker-id lease lost: namespace=%s worker_id=%s: %s", self.namespace, self.worker_id, reason)
        if self.on_lost is not None:
            try:
                self.on_lost(reason)
            except Exception:
                log.exception("on_lost callback failed")

    def _mark(self) -> int:
        gen = self._gen() if self._gen is not None else None
        newest = gen.high_water_ms if gen is not None else self.high_water_ms
        return max(newest, self.high_water_ms) + self.ttl_ms

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval_s):
            started = time.monotonic()
            try:
                ok = self._renew(self.worker_id, self._token, self._mark())
            except Exception as exc:  # store unreachable: keep trying until the deadline passes
                log.warning(
                    "worker-id lease heartbeat failed (%s); lease presumed lost in %.1f s",
                    exc,
                    max(0.0, self._deadline - time.monotonic()),
                )
                if time.monotonic() > self._deadline:
                    self._mark_lost(f"store unreachable for longer than the ttl: {exc}")
                continue
            if not ok:
                self._mark_lost("the lease record expired or was taken by another process")
                return
            self._deadline = started + self.ttl_ms / 1000

    def close(self) -> None:
        """Stop heartbeating and release the worker id (persisting the high-water mark)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self._token and self._lost is None:
            try:
                self._release(self.worker_id, self._token, self._mark())
            except Exception as exc:
                log.warning(
                    "could not release worker id %s: %s (it expires in %d ms)", self.worker_id, exc, self.ttl_ms
                )
            self._lost = "released"
        self._token = ""

    def after_fork_in_child(self, gen: IdGenerator) -> None:
        """In a forked child: lease a new worker id (the parent keeps its own) and heartbeat it."""
        self._reset_after_fork()
        self.high_water_ms = 0
        self.acquire()
        gen._rebind_worker(self.worker_id)
        self._gen = weakref.ref(gen)
        self._start_thread()


def _close_ref(ref: weakref.ref[WorkerLease]) -> Callable[[], None]:
    def close() -> None:
        lease = ref()
        if lease is not None:
            lease.close()

    return close
