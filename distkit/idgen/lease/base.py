"""What every worker-id lease does, whatever stores it: acquire, heartbeat, detect loss, release, re-lease
after fork. Stores implement three small operations (:meth:`WorkerLease._try_acquire`, ``_renew``,
``_release``).

The invariant that keeps ids unique across holders of one worker id:

* each renewal starts by reading the generator's clock ``w`` and the monotonic clock ``m``, then writes the
  mark ``w + ttl`` (the store keeps the larger of the old and new mark) and extends the lease record;
* once the store confirmed it, the holder may issue timestamps up to ``w + ttl - margin`` (the generator's
  ``_limit``, compared after every clock read), and only until ``m + ttl - margin`` by the monotonic clock
  (after that, without a newer renewal, the lease is lost: ``next_id`` raises);
* a successor on the same worker id starts strictly above the mark it reads, so above every timestamp any
  earlier holder could issue, however long that holder was paused and however far the successor's clock is
  behind (Snowflake waits up to one ttl for its clock to pass the mark, else refuses to start);
* on a clean ``close()`` the mark is lowered to the exact last timestamp issued, so a restart does not wait;
* if the store lost its marks (Redis ``FLUSHALL``, a failover to an empty replica, a recreated table), the first
  lease taken afterwards waits one ttl before issuing: by then every earlier holder has seen its lease gone or
  passed its deadline. The store cannot tell that from a brand-new namespace, so the very first start of a
  namespace waits one ttl too.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from distkit.errors import (
    BackendUnavailableError,
    InvalidLeaseConfigError,
    InvalidWorkerIdError,
    WorkerIdExhaustedError,
    WorkerLeaseLostError,
)

if TYPE_CHECKING:
    from distkit.idgen.generator import IdGenerator

log = logging.getLogger(__name__)

OnLost = Callable[[str], None]

_LEASES: weakref.WeakSet[WorkerLease] = weakref.WeakSet()


@functools.cache
def _outage_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [BackendUnavailableError, OSError]
    try:
        import redis

        errors += [redis.ConnectionError, redis.TimeoutError]
    except ImportError:  # pragma: no cover - SQL-only installs
        pass
    try:
        from sqlalchemy.exc import DBAPIError

        errors.append(DBAPIError)
    except ImportError:  # pragma: no cover - Redis-only installs
        pass
    return tuple(errors)


def _forget_parent_leases() -> None:
    for lease in list(_LEASES):
        lease._after_fork_in_child()


def _close_all_at_exit() -> None:
    for lease in list(_LEASES):
        gen = lease._gen() if lease._gen is not None else None
        try:
            if gen is not None:
                gen.close()
            else:
                lease.close()
        except Exception:  # pragma: no cover - best effort at exit
            log.exception("closing worker-id lease at exit failed")


os.register_at_fork(after_in_child=_forget_parent_leases)  # one hook and one atexit for every lease
atexit.register(_close_all_at_exit)


class WorkerLease:
    """Base class of :class:`RedisWorkerLease` and :class:`SqlWorkerLease`."""

    def __init__(self, *, namespace: str, max_worker_id: int | None, ttl_s: float, on_lost: OnLost | None) -> None:
        if not isinstance(namespace, str) or not namespace:
            raise InvalidLeaseConfigError("a worker lease needs a namespace (one per id space, e.g. 'orders')")
        if max_worker_id is not None and (
            not isinstance(max_worker_id, int) or isinstance(max_worker_id, bool) or max_worker_id < 0
        ):
            raise InvalidLeaseConfigError(f"max_worker_id must be an int >= 0 or None, got {max_worker_id!r}")
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not ttl_s * 1000 >= 10:
            raise InvalidLeaseConfigError(f"ttl_s must be a number >= 0.01, got {ttl_s!r}")
        self.namespace = namespace
        self.max_worker_id = max_worker_id
        self.ttl_ms = int(ttl_s * 1000)
        self.margin_ms = max(2, self.ttl_ms // 50)  # clock-rate drift between this host and the store
        self.on_lost = on_lost
        self.worker_id = -1
        self.high_water_ms = 0  # the mark read at acquire (unix ms)
        self._range: int | None = max_worker_id
        self._split_node = False
        self._token = ""
        self._lost: str | None = None
        self._active = False
        self._valid_until = 0.0  # monotonic: after it, without a newer renewal, the lease is presumed lost
        self._not_before = 0.0  # monotonic: no id before it (the store's marks were lost: wait one ttl)
        self._lock = threading.Lock()  # state; never held across a store call
        self._renew_lock = threading.Lock()  # one renewal at a time (heartbeat thread or inline)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gen: weakref.ref[IdGenerator] | None = None
        _LEASES.add(self)

    # -- store operations --------------------------------------------------------------------------
    def _try_acquire(self, token: str, max_id: int, deadline: float) -> tuple[int, int, int] | None:
        """Atomically take a free worker id: ``(worker_id, persisted mark ms, wait ms)`` or ``None``.
        ``wait ms`` > 0 when the store's marks are new (lost, or a new namespace); the record must then
        live ``ttl + wait``."""
        raise NotImplementedError

    def _renew(self, worker_id: int, token: str, mark_ms: int, deadline: float) -> bool:
        """Extend the lease if ``token`` still holds it; raise its mark to ``mark_ms``. False: the lease is gone."""
        raise NotImplementedError

    def _release(self, worker_id: int, token: str, mark_ms: int | None, deadline: float) -> None:
        """Free the worker id if ``token`` holds it; set its mark to exactly ``mark_ms`` (None: keep it)."""
        raise NotImplementedError

    def _reset_after_fork(self) -> None:
        """Drop connections inherited from the parent (override if the store needs it)."""

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def heartbeat_interval_s(self) -> float:
        return self.ttl_ms / 3000

    @property
    def valid_for_s(self) -> float:
        """Seconds the lease is known to be valid without another renewal (<= 0: lost or not held)."""
        return self._valid_until - time.monotonic() if self._token and self._lost is None else 0.0

    def _use_range(self, space: int, split: bool) -> None:
        """Called by ``from_lease``: the largest id the generator's layout can hold."""
        if self.max_worker_id is not None and self.max_worker_id > space:
            raise InvalidWorkerIdError(
                f"max_worker_id={self.max_worker_id} does not fit the generator's layout (ids 0..{space}); "
                f"pass max_worker_id <= {space} or leave it out to use the layout's range"
            )
        self._range = space if self.max_worker_id is None else self.max_worker_id
        self._split_node = split

    def acquire(self) -> int:
        """Lease a free worker id (raises :class:`~distkit.errors.WorkerIdExhaustedError` if none)."""
        if self._range is None:
            raise InvalidLeaseConfigError(
                "max_worker_id is derived from the generator's layout by Snowflake/Butterfly.from_lease(); "
                "pass max_worker_id= to call acquire() directly"
            )
        if self._token:
            raise InvalidLeaseConfigError(f"this lease already holds worker id {self.worker_id}; close() it first")
        token = uuid.uuid4().hex
        started = time.monotonic()
        got = self._try_acquire(token, self._range, started + self.ttl_ms / 1000)
        if got is None:
            raise WorkerIdExhaustedError(
                f"all {self._range + 1} worker ids of namespace {self.namespace!r} are leased by live "
                "processes; raise max_worker_id (within the layout's bits) or stop some"
            )
        worker_id, mark, wait_ms = got
        replied = time.monotonic()
        with self._lock:
            self.worker_id, self.high_water_ms = worker_id, mark
            self._token = token
            self._lost = None
            self._active = False
            self._valid_until = started + (self.ttl_ms + wait_ms - self.margin_ms) / 1000
            self._not_before = replied + wait_ms / 1000
        if wait_ms:
            log.warning(
                "worker-id marks of namespace %r are new (first use, or lost by the store): waiting %d ms before "
                "issuing so that no earlier holder of worker id %d can still be issuing",
                self.namespace,
                wait_ms,
                worker_id,
            )
        return worker_id

    def bind(self, gen: IdGenerator) -> None:
        """Called by the generator: wait out a lost mark set, renew once (enables issuing), heartbeat."""
        self._gen = weakref.ref(gen)
        pause = self._not_before - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        with self._lock:
            self._active = True
        if not self._renew_once(gen):
            self.check()
            raise WorkerLeaseLostError(
                f"could not renew worker id {self.worker_id} of namespace {self.namespace!r} after acquiring it "
                "(store unreachable?)"
            )
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._heartbeat_loop, name=f"distkit-idgen-lease-{self.namespace}", daemon=True
        )
        self._thread.start()

    def check(self) -> None:
        """Raise :class:`~distkit.errors.WorkerLeaseLostError` if ids must not be issued any more."""
        if self._lost is None and self._token and time.monotonic() > self._valid_until:
            self._set_lost(f"no successful renewal for {self.ttl_ms - self.margin_ms} ms (store unreachable?)")
        if self._lost is not None or not self._token:
            raise WorkerLeaseLostError(
                f"worker id {self.worker_id} of namespace {self.namespace!r} is no longer leased "
                f"({self._lost or 'not held'}); this generator stopped issuing ids to avoid duplicates. "
                "Create a new generator from a new lease"
            )

    def cover(self, gen: IdGenerator, ts: int) -> None:
        """``gen`` wants timestamp ``ts`` beyond its limit (clock jumped forward, renewals late): renew now if
        the lease is still known to be valid, else raise. Called with the generator's lock held."""
        self.check()
        self._renew_once(gen)
        self.check()
        if ts > gen._limit:
            raise WorkerLeaseLostError(
                f"timestamp {ts + gen.epoch_ms} is beyond what worker id {self.worker_id}'s lease covers "
                f"(renewal failed or the clock is > ttl ahead of the persisted mark); retry later"
            )

    def _renew_once(self, gen: IdGenerator) -> bool:
        """One renewal: read the clocks, persist ``w + ttl``, then (on success) raise the generator's limit.

        Renewals are serialised by ``_renew_lock`` (held across the store call); the state lock ``_lock`` is never
        held across I/O, so marking the lease lost at its deadline never waits for a slow store."""
        with self._renew_lock:
            lost: str | None = None
            with self._lock:
                if not self._active or self._lost is not None or not self._token:
                    return False
                started = time.monotonic()
                worker_id, token, deadline = self.worker_id, self._token, self._valid_until
                if started >= deadline:
                    lost = f"no successful renewal for {self.ttl_ms - self.margin_ms} ms (store unreachable?)"
            if lost is not None:
                self._set_lost(lost)
                return False
            w = gen._lease_clock()
            try:
                ok = self._renew(worker_id, token, w + gen.epoch_ms + self.ttl_ms, deadline)
            except _outage_errors() as exc:  # keep trying until the deadline passes
                log.warning(
                    "worker-id lease renewal failed (%s); lease presumed lost in %.2f s",
                    exc,
                    max(0.0, deadline - time.monotonic()),
                )
                return False
            if not ok:
                self._set_lost("the lease record expired or was taken by another process")
                return False
            with self._lock:  # the same lock as _set_lost and _deactivate: a lost or closed lease stays so
                if not self._active or self._lost is not None or self._token != token:
                    return False
                self._valid_until = max(self._valid_until, started + (self.ttl_ms - self.margin_ms) / 1000)
                gen._set_limit(w + self.ttl_ms - self.margin_ms)
            return True

    def _set_lost(self, reason: str) -> None:
        with self._lock:
            if self._lost is not None:
                return
            self._lost = reason
            self._stop.set()
            gen = self._gen() if self._gen is not None else None
            if gen is not None:
                gen._lease_lost()
        log.error("worker-id lease lost: namespace=%s worker_id=%s: %s", self.namespace, self.worker_id, reason)
        if self.on_lost is not None:
            try:
                self.on_lost(reason)
            except Exception:
                log.exception("on_lost callback failed")

    def _heartbeat_loop(self) -> None:
        stop = self._stop
        next_at = time.monotonic() + self.heartbeat_interval_s
        while True:
            timeout = max(0.0, min(next_at, self._valid_until) - time.monotonic())
            if stop.wait(timeout):
                return
            gen = self._gen() if self._gen is not None else None
            if gen is None:  # the generator was dropped without close(): free the id, keep the mark
                self.close()
                return
            ok = self._renew_once(gen)
            del gen
            if self._lost is not None:
                return
            interval = self.heartbeat_interval_s
            next_at = time.monotonic() + (interval if ok else interval / 4)

    def _deactivate(self) -> None:
        with self._lock:
            self._active = False

    def close(self, mark_ms: int | None = None) -> None:
        """Stop heartbeating and release the worker id. ``mark_ms`` (the generator's exact last timestamp,
        given by ``IdGenerator.close``) replaces the persisted mark; None keeps it."""
        with self._lock:
            self._active = False
            self._stop.set()
            thread, self._thread = self._thread, None
            token, self._token = self._token, ""
            lost = self._lost
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(5.0, self.ttl_ms / 1000))
        if token and lost is None:
            try:
                self._release(self.worker_id, token, mark_ms, time.monotonic() + min(5.0, self.ttl_ms / 1000))
            except Exception as exc:
                log.warning(
                    "could not release worker id %s: %s (it expires in %d ms)", self.worker_id, exc, self.ttl_ms
                )
        with self._lock:
            if self._lost is None:
                self._lost = "released"

    def _after_fork_in_child(self) -> None:
        """The child holds nothing: forget the parent's token (never release or renew it from here)."""
        self._lock = threading.Lock()
        self._renew_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._token = ""
        self._active = False
        self._lost = None
        self.high_water_ms = 0
        self._reset_after_fork()

