"""``CircuitBreaker``: the clock, lock, decorator, events and store around the pure :class:`Machine`."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from distkit.clock import Clock
from distkit.errors import BackendUnavailableError, BreakerOpenError, InvalidBreakerConfigError
from distkit.resilience.breaker import (
    CALL,
    CLOSED,
    FOREVER,
    HALF_OPEN,
    OPEN,
    RULE_TRIPS,
    BreakerConfig,
    Machine,
    State,
    Transition,
)
from distkit.resilience.metrics import EventHook, Recorder, log
from distkit.resilience.stores.base import AsyncBreakerStore, BreakerStore, View

F = TypeVar("F", bound=Callable[..., Any])

def monotonic_clock() -> int:
    """The default clock: ``time.monotonic`` in ms (an NTP step cannot fake a slow call or age the window)."""
    return time.monotonic_ns() // 1_000_000


_BREAKERS: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
IDLE_FLUSH_S = 1.0  # an idle CLOSED breaker still hears from its store this often (at most open_s / 4)


def _after_fork_in_child() -> None:
    for b in list(_BREAKERS):
        if b._lock.locked():  # held by a thread that does not exist in the child
            b._lock.release()


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass(frozen=True)
class BreakerMetrics:
    """A snapshot: the window's counts (shared totals when a healthy store is attached) and the rates."""

    name: str
    state: State
    calls: int
    failed_calls: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float
    not_permitted_calls: int
    probes_in_flight: int
    forced: bool
    shared: bool
    store_healthy: bool


def _outage_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [BackendUnavailableError, OSError]
    try:
        import redis

        errs += [redis.ConnectionError, redis.TimeoutError, redis.RedisError]
    except ImportError:  # pragma: no cover - no redis: the memory store raises nothing of the kind
        pass
    return tuple(errs)


class CircuitBreaker:
    """Stop calling a failing or slow dependency; probe it again after ``open_s``.

    >>> breaker = CircuitBreaker("payment-api", failure_rate=0.5, minimum_calls=20, open_s=5)  # doctest: +SKIP
    >>> @breaker
    ... def call_payment_api(order): ...

    * ``failure_rate`` / ``slow_call_rate`` in (0, 1]: trip when the time window of ``window_s`` (in ``buckets``
      buckets) holds at least ``minimum_calls`` calls and that share of them failed / took ``>= slow_call_s``;
    * after ``open_s`` OPEN, HALF_OPEN lets exactly ``half_open_calls`` probes through (across every process when
      ``store`` is shared); their rates close or re-open it; unfinished after ``half_open_max_s`` → OPEN;
    * exceptions that are instances of ``record_exceptions`` count as failures, of ``ignore_exceptions`` not at
      all (nor do ``BaseException``\\s such as cancellation); other exceptions count as successes;
    * ``store=None`` keeps everything in this process; a :class:`~distkit.resilience.RedisBreakerStore` shares the
      window and the probe budget (see docs/resilience.md);
    * ``clock`` (unix ms, :mod:`distkit.clock`) drives the window and durations; default: a monotonic ms clock;
    * ``on_event(Event)`` sees every transition and rejection (OpenTelemetry counters count them too).

    Decorate sync or async functions; ``call(fn, *args)`` / ``await acall(fn, *args)`` do the same ad hoc.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_rate: float = 0.5,
        slow_call_rate: float = 1.0,
        slow_call_s: float = 60.0,
        window_s: float = 10.0,
        buckets: int = 10,
        minimum_calls: int = 20,
        open_s: float = 5.0,
        half_open_calls: int = 3,
        half_open_max_s: float = 30.0,
        record_exceptions: tuple[type[BaseException], ...] = (Exception,),
        ignore_exceptions: tuple[type[BaseException], ...] = (),
        store: BreakerStore | AsyncBreakerStore | None = None,
        clock: Clock | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidBreakerConfigError(f"a circuit breaker needs a non-empty name, got {name!r}")
        if not isinstance(record_exceptions, tuple) or not isinstance(ignore_exceptions, tuple):
            raise InvalidBreakerConfigError("record_exceptions and ignore_exceptions must be tuples of exception types")
        ms = BreakerConfig.ms
        self.cfg = BreakerConfig(
            failure_rate=failure_rate,
            slow_call_rate=slow_call_rate,
            slow_call_ms=ms(slow_call_s, "slow_call_s"),
            window_ms=ms(window_s, "window_s"),
            buckets=buckets,
            minimum_calls=minimum_calls,
            open_ms=ms(open_s, "open_s"),
            half_open_calls=half_open_calls,
            half_open_max_ms=ms(half_open_max_s, "half_open_max_s"),
        )
        self.name = name
        self._clock: Clock = clock if clock is not None else monotonic_clock
        self._fast_clock = clock is None
        self._lock = threading.Lock()
        self._m = Machine(self.cfg, self._clock())
        self._record = record_exceptions
        self._ignore = ignore_exceptions
        self._events = Recorder(name, "breaker", on_event)
        self._store: Any = store  # a BreakerStore or an AsyncBreakerStore (is_async)
        self._healthy = store is not None
        self._outage = _outage_errors() if store is not None else ()
        self._g_epoch = -1  # the store's epoch as last seen
        self._exhausted = -2  # the store epoch whose probe budget is known to be used up
        # local probe permit -> the store epochs of the probes granted under it (several threads share one permit)
        self._probe_epochs: dict[int, list[int]] = {}
        self._sent = (0, 0, 0)  # machine.flushed() as of the last successful sync
        self._trip_pending: int | None = None
        self._store_async = bool(getattr(store, "is_async", False))
        self._pending_control: str | None = None
        self._last_flush = 0.0  # time.monotonic() of the last successful flush
        _BREAKERS.add(self)
        if store is not None:
            store.attach(self)

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> State:
        """CLOSED / OPEN / HALF_OPEN now (an OPEN breaker whose ``open_s`` passed reads HALF_OPEN)."""
        now = self._clock()
        with self._lock:
            t = self._m.tick(now)
            state = self._m.state
        self._emit(t, now)
        return state

    def metrics(self) -> BreakerMetrics:
        """A snapshot of the window as of now (buckets older than the window have left it)."""
        now = self._clock()
        with self._lock:
            m = self._m
            if m.state is CLOSED:
                m.roll(now)
            calls, failed, slow = m.totals()
            return BreakerMetrics(
                name=self.name,
                state=m.state,
                calls=calls,
                failed_calls=failed,
                slow_calls=slow,
                failure_rate=failed / calls if calls else 0.0,
                slow_call_rate=slow / calls if calls else 0.0,
                not_permitted_calls=m.rejected,
                probes_in_flight=m.issued - m.done if m.state is HALF_OPEN else 0,
                forced=m.forced,
                shared=self._store is not None,
                store_healthy=self._healthy,
            )

    def force_open(self) -> None:
        """Hold the breaker OPEN (every process when shared) until :meth:`reset`."""
        self._control("force_open")

    def reset(self) -> None:
        """CLOSED with an empty window (every process when shared); also ends ``force_open``."""
        self._control("reset")

    def _control(self, op: str) -> None:
        now = self._clock()
        with self._lock:
            t = self._m.force_open(now) if op == "force_open" else self._m.reset(now)
        self._emit(t, now)
        if self._store is None:
            return
        if self._store_async:  # sync caller, asyncio store: the next aflush() tells the store
            self._pending_control = op
            return
        try:
            view = self._store.control(self.name, self.cfg, op)
        except self._outage as exc:
            self._unhealthy(exc)
        else:
            self._apply(view)

    async def aforce_open(self) -> None:
        """:meth:`force_open` that tells an asyncio store (``AsyncRedisBreakerStore``) at once."""
        await self._acontrol("force_open")

    async def areset(self) -> None:
        """:meth:`reset` that tells an asyncio store at once."""
        await self._acontrol("reset")

    async def _acontrol(self, op: str) -> None:
        if not self._store_async:
            self._control(op)
            return
        now = self._clock()
        with self._lock:
            t = self._m.force_open(now) if op == "force_open" else self._m.reset(now)
        self._emit(t, now)
        self._pending_control = None
        try:
            view = await self._store.control(self.name, self.cfg, op)
        except self._outage as exc:
            self._unhealthy(exc)
        else:
            self._apply(view)

    def _apply(self, view: View) -> None:
        now = self._clock()
        with self._lock:
            t = self._adopt(view, now)
        self._emit(t, now)

    def close(self) -> None:
        """Detach from the store (its flusher stops syncing this breaker)."""
        if self._store is not None:
            self._store.detach(self)

    # ------------------------------------------------------------------ events

    def _emit(self, t: Transition | None, now: int) -> None:
        if t is not None:
            self._events.transition(t[0].value, t[1].value, t[2], now)
            if t[1] is OPEN and t[0] is CLOSED and t[2].startswith(RULE_TRIPS) and self._store is not None:
                # a rule tripped here: tell the store at once (force_open/reset go to it directly)
                self._trip_pending = self._g_epoch
                self._store_wake()

    def _store_wake(self) -> None:
        wake = getattr(getattr(self._store, "flusher", None), "wake", None)
        if wake is not None:
            wake()

    def _reject(self, now: int, retry_ms: int, state: State) -> BreakerOpenError:
        self._events.rejected(state.value, now)
        return BreakerOpenError(self.name, state.value, retry_ms / 1000)

    # ------------------------------------------------------------------ admission and outcomes

    def _admit_pre(self, now: int, can_ask: bool) -> int | None:
        """Admission without I/O: a permit, or raises BreakerOpenError, or None = ask the store for a probe."""
        if self._store is not None and self._healthy and can_ask:
            with self._lock:
                t = self._m.tick(now) if self._m.state is OPEN else None
                state = self._m.state
                retry = self._m.retry_after_ms(now)
                if state is OPEN or (state is HALF_OPEN and self._exhausted == self._g_epoch):
                    self._m.rejected += 1
                    state_seen: State | None = state
                else:
                    state_seen = None
            self._emit(t, now)
            if state_seen is not None:
                raise self._reject(now, retry, state_seen)
            return CALL if state is CLOSED else None
        return self._admit_local(now)

    def _admit_local(self, now: int) -> int:
        with self._lock:
            permit, t = self._m.admit(now)
            state = self._m.state
            retry = self._m.retry_after_ms(now)
        self._emit(t, now)
        if permit is None:
            raise self._reject(now, retry, state)
        return permit

    def _admit(self) -> int:
        """The slow path of admission (the breaker is not CLOSED): a permit, or raises BreakerOpenError."""
        now = self._clock()
        permit = self._admit_pre(now, not self._store_async)
        if permit is not None:
            return permit
        try:
            view = self._store.acquire_probe(self.name, self.cfg)
        except self._outage as exc:
            self._unhealthy(exc)
            return self._admit_local(now)
        return self._granted(view, now)

    async def _aadmit_store(self) -> int:
        """Asyncio twin of :meth:`_admit` for an asyncio store."""
        now = self._clock()
        permit = self._admit_pre(now, True)
        if permit is not None:
            return permit
        try:
            view = await self._store.acquire_probe(self.name, self.cfg)
        except self._outage as exc:
            self._unhealthy(exc)
            return self._admit_local(now)
        return self._granted(view, now)

    def _may_ask_store(self) -> bool:
        """Whether admission may need a store round trip (else it answers locally, without I/O)."""
        m = self._m
        if m.state is OPEN:
            return self._clock() >= m.open_until
        return m.state is HALF_OPEN and self._exhausted != self._g_epoch

    def _granted(self, view: View, now: int) -> int:
        with self._lock:
            t = self._adopt(view, now)
            m = self._m
            permit: int | None = None
            if view.granted and m.state is HALF_OPEN:
                m.issued += 1
                permit = 2 * m.epoch + 1
                self._probe_epochs.setdefault(permit, []).append(view.epoch)
            elif m.state is CLOSED:
                permit = CALL
            else:
                if m.state is HALF_OPEN:
                    self._exhausted = view.epoch
                m.rejected += 1
            state = m.state
            retry = m.retry_after_ms(now)
        self._emit(t, now)
        if permit is None:
            raise self._reject(now, retry, state)
        return permit

    def _finish(self, permit: int, now: int, failed: bool, slow: bool) -> None:
        if permit != CALL and self._store is not None and not self._store_async:
            epoch = self._store_epoch_of(permit)
            if epoch is not None and self._healthy:
                try:
                    view = self._store.record_probe(self.name, self.cfg, epoch, failed, slow)
                except self._outage as exc:
                    self._unhealthy(exc)
                else:
                    self._probe_reported(view, now)
                    return
        with self._lock:
            t = self._m.record(now, permit, failed, slow)
        self._emit(t, now)

    async def _afinish(self, permit: int, now: int, failed: bool, slow: bool) -> None:
        if permit != CALL and self._store_async:
            epoch = self._store_epoch_of(permit)
            if epoch is not None and self._healthy:
                try:
                    view = await self._store.record_probe(
                        self.name, self.cfg, epoch, failed, slow
                    )
                except self._outage as exc:
                    self._unhealthy(exc)
                else:
                    self._probe_reported(view, now)
                    return
        self._finish(permit, now, failed, slow)

    def _probe_reported(self, view: View, now: int) -> None:
        with self._lock:
            self._m.done += 1
            t = self._adopt(view, now)
        self._emit(t, now)

    def _store_epoch_of(self, permit: int) -> int | None:
        """The store epoch of one probe granted by the store under ``permit`` (None: granted locally)."""
        with self._lock:
            epochs = self._probe_epochs.get(permit)
            if not epochs:
                return None
            epoch = epochs.pop()
            if not epochs:
                del self._probe_epochs[permit]
            return epoch

    def _release(self, permit: int) -> None:
        if permit == CALL:
            return
        if self._store is not None and not self._store_async:
            epoch = self._store_epoch_of(permit)
            if epoch is not None and self._healthy:
                try:
                    view = self._store.release_probe(self.name, self.cfg, epoch)
                except self._outage as exc:
                    self._unhealthy(exc)
                else:
                    self._probe_released(view)
                    return
        with self._lock:
            self._m.release(permit)

    async def _arelease(self, permit: int) -> None:
        if permit != CALL and self._store_async:
            epoch = self._store_epoch_of(permit)
            if epoch is not None and self._healthy:
                try:
                    view = await self._store.release_probe(self.name, self.cfg, epoch)
                except self._outage as exc:
                    self._unhealthy(exc)
                else:
                    self._probe_released(view)
                    return
        self._release(permit)

    def _probe_released(self, view: View) -> None:
        now = self._clock()
        with self._lock:
            self._m.issued = max(self._m.done, self._m.issued - 1)
            t = self._adopt(view, now)
        self._emit(t, now)

    def _on_exception(self, permit: int, t0: int, exc: BaseException) -> None:
        if isinstance(exc, self._ignore) or not isinstance(exc, Exception):
            self._release(permit)
            return
        t1 = self._clock()
        self._finish(permit, t1, isinstance(exc, self._record), t1 - t0 >= self._m.slow_ms)

    async def _aon_exception(self, permit: int, t0: int, exc: BaseException) -> None:
        if isinstance(exc, self._ignore) or not isinstance(exc, Exception):
            await self._arelease(permit)
            return
        t1 = self._clock()
        await self._afinish(permit, t1, isinstance(exc, self._record), t1 - t0 >= self._m.slow_ms)

    # ------------------------------------------------------------------ shared store

    def _unhealthy(self, exc: BaseException) -> None:
        if self._healthy:
            log.warning("circuit breaker %r: store unavailable, using local statistics (%s)", self.name, exc)
        self._healthy = False
        with self._lock:
            self._m.set_ext(0, 0, 0)

    def _adopt(self, view: View, now: int) -> Transition | None:
        """Under the lock: take the store's state and the other processes' share of the window."""
        self._g_epoch = view.epoch
        t = self._m.adopt(now, view.state, view.remaining_open_ms, view.forced)
        if view.state is CLOSED:
            self._m.set_ext(view.calls, view.failed, view.slow)
        return t

    def _flush_pre(self) -> tuple[tuple[int, int, int], tuple[int, int, int], int | None]:
        with self._lock:
            cum = self._m.flushed()
            trip = self._trip_pending
        sent = self._sent
        return cum, (cum[0] - sent[0], cum[1] - sent[1], cum[2] - sent[2]), trip

    def _flush_post(self, view: View, trip: int | None) -> None:
        self._last_flush = time.monotonic()
        if not self._healthy:
            log.info("circuit breaker %r: store reachable again, sharing statistics", self.name)
        self._healthy = True
        if trip is not None and self._trip_pending == trip:
            self._trip_pending = None
        now = self._clock()
        with self._lock:
            t = self._adopt(view, now)
            t2 = self._m.evaluate(now)
        self._emit(t, now)
        self._emit(t2, now)

    def _idle(self) -> bool:
        """Nothing to tell the store and heard from it lately: the flusher may skip this round (an idle process
        costs Redis one script per ``min(1 s, open_s / 4)`` per breaker; a busy one flushes every ``flush_s``)."""
        if self._trip_pending is not None or self._pending_control is not None or not self._healthy:
            return False
        with self._lock:
            busy = self._m.state is not CLOSED or self._m.flushed() != self._sent
        quiet_s = min(IDLE_FLUSH_S, self.cfg.open_ms / 4000)  # never sleep through a whole OPEN period
        return not busy and time.monotonic() - self._last_flush < quiet_s

    def _auto_flush(self) -> None:
        if not self._idle():
            self.flush()

    async def _aauto_flush(self) -> None:
        if not self._idle():
            await self.aflush()

    def flush(self) -> None:
        """Flush the local counts to the store and take its view (the store's flusher calls this every
        ``flush_s``; call it by hand in tests or with ``flush_s=None``). Store errors switch to local statistics.
        With an asyncio store use :meth:`aflush`."""
        store = self._store
        if store is None:
            return
        if self._store_async:
            raise TypeError(f"breaker {self.name!r} has an asyncio store: use `await breaker.aflush()`")
        cum, delta, trip = self._flush_pre()
        try:
            view = store.flush(self.name, self.cfg, delta, trip)
        except self._outage as exc:
            self._unhealthy(exc)
            return
        finally:
            self._sent = cum  # sent, or dropped from the shared window on failure (they stay in the local one)
        self._flush_post(view, trip)

    async def aflush(self) -> None:
        """Asyncio twin of :meth:`flush` (for ``AsyncRedisBreakerStore``; with a sync store it runs :meth:`flush`
        in a thread). Also sends a ``force_open``/``reset`` made by a sync caller."""
        store = self._store
        if store is None:
            return
        if not self._store_async:
            await asyncio.to_thread(self.flush)
            return
        op, self._pending_control = self._pending_control, None
        if op is not None:
            await self._acontrol(op)
        cum, delta, trip = self._flush_pre()
        try:
            view = await store.flush(self.name, self.cfg, delta, trip)
        except self._outage as exc:
            self._unhealthy(exc)
            return
        finally:
            self._sent = cum
        self._flush_post(view, trip)

    # ------------------------------------------------------------------ calling

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` through the breaker (the same rules as the decorator, without wrapping ``fn``)."""
        permit = CALL if self._m.state is CLOSED else self._admit()
        t0 = self._clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._on_exception(permit, t0, exc)
            raise
        t1 = self._clock()
        self._finish(permit, t1, False, t1 - t0 >= self._m.slow_ms)
        return result

    async def acall(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``await fn(*args, **kwargs)`` through the breaker."""
        return await self(fn)(*args, **kwargs)

    def __call__(self, fn: F) -> F:
        m = self._m
        lock = self._lock
        clock = self._clock
        slow_ms = m.slow_ms
        admit = self._admit
        finish = self._finish
        on_exception = self._on_exception
        emit = self._emit

        if inspect.iscoroutinefunction(fn):

            async def aadmit() -> int:
                if self._store_async and self._healthy:
                    return await self._aadmit_store()
                if self._store is not None and self._healthy and self._may_ask_store():
                    return await asyncio.to_thread(admit)  # a HALF_OPEN probe asks a sync store: off the loop
                return admit()

            async def aon_exception(permit: int, t0: int, exc: BaseException) -> None:
                if self._store_async:
                    await self._aon_exception(permit, t0, exc)
                else:
                    await asyncio.to_thread(on_exception, permit, t0, exc)

            async def afinish(permit: int, t1: int, slow: bool) -> None:
                if self._store_async:
                    await self._afinish(permit, t1, False, slow)
                else:
                    await asyncio.to_thread(finish, permit, t1, False, slow)

            @functools.wraps(fn)
            async def acall(*args: Any, **kwargs: Any) -> Any:
                permit = CALL if m.state is CLOSED else await aadmit()
                t0 = clock()
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    if permit and self._store is not None:
                        await aon_exception(permit, t0, exc)
                    else:
                        on_exception(permit, t0, exc)
                    raise
                t1 = clock()
                if permit or t1 - t0 >= slow_ms:
                    if permit and self._store is not None:
                        await afinish(permit, t1, t1 - t0 >= slow_ms)
                    else:
                        finish(permit, t1, False, t1 - t0 >= slow_ms)
                    return result
                with lock:
                    if m.state is CLOSED:
                        if t1 >= m.bucket_end:
                            m.roll(t1)
                        m.calls += 1
                        t = m.evaluate(t1) if m.calls == m.trip_at else None
                    else:
                        t = None
                if t is not None:
                    emit(t, t1)
                return result

            return cast(F, acall)

        if self._fast_clock:
            # default clock: time.monotonic_ns inline (two C calls, no Python frame), ms only when needed
            ns = time.monotonic_ns
            slow_ns = slow_ms * 1_000_000
            acquire = lock.acquire
            release = lock.release
            closed = CLOSED

            @functools.wraps(fn)
            def fast_call(*args: Any, **kwargs: Any) -> Any:
                permit = CALL if m.state is closed else admit()
                t0 = ns()
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    on_exception(permit, t0 // 1_000_000, exc)
                    raise
                t1 = ns()
                if permit or t1 - t0 >= slow_ns:
                    finish(permit, t1 // 1_000_000, False, t1 - t0 >= slow_ns)
                    return result
                acquire()
                try:
                    if m.state is closed:
                        if t1 >= m.bucket_end_ns:
                            m.roll(t1 // 1_000_000)
                        m.calls += 1
                        t = m.evaluate(t1 // 1_000_000) if m.calls == m.trip_at else None
                    else:
                        t = None
                finally:
                    release()
                if t is not None:
                    emit(t, t1 // 1_000_000)
                return result

            return cast(F, fast_call)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            permit = CALL if m.state is CLOSED else admit()
            t0 = clock()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                on_exception(permit, t0, exc)
                raise
            t1 = clock()
            if permit or t1 - t0 >= slow_ms:
                finish(permit, t1, False, t1 - t0 >= slow_ms)
                return result
            with lock:
                if m.state is CLOSED:
                    if t1 >= m.bucket_end:
                        m.roll(t1)
                    m.calls += 1
                    t = m.evaluate(t1) if m.calls == m.trip_at else None
                else:
                    t = None
            if t is not None:
                emit(t, t1)
            return result

        return cast(F, call)

    def __repr__(self) -> str:
        m = self._m
        until = "" if m.state is not OPEN or m.open_until >= FOREVER else f", open_until={m.open_until}"
        return f"CircuitBreaker({self.name!r}, state={m.state.value}{until})"
