"""Lease renewal for holds taken without ``lease_ms``: one thread (or task) per ``Locks``.

Redisson's watchdog kept renewing after the owning thread had died (redisson#3521, #5115, #6198), so a crashed
worker's lock lived forever. Here a hold is renewed only while its owner thread / task is alive; once the
owner is gone the hold is dropped and the lock expires one lease later. A renewal that finds the hold gone
(key deleted, Redis restarted) marks it lost; so does the lease running out without a successful renewal
(an outage, a black-holed server): ``on_lost`` then fires once, no later than the last successful renewal
plus the lease (measured on ``time.monotonic``).

Every renewal call carries the deadline of the leases it renews, and ``on_lost`` callbacks never run on the
renewal path: they run on a few callback threads (sync, :class:`CallbackThreads`) or as a task / in the
loop's executor (asyncio), so a slow callback cannot make a healthy lock on the same watchdog expire. The
sync watchdog also has a small expiry thread, so a renewal call stuck past its deadline cannot delay
``on_lost`` either.

:class:`RenewalPlanner` decides (no I/O); :class:`Watchdog` and :class:`AsyncWatchdog` only run it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from distkit._redis import Script
from distkit.locks.holds import Hold, HoldTable

log = logging.getLogger("distkit.locks")

Batch = dict[Script, list[tuple[Hold, Any]]]


class RenewalPlanner:
    """Which holds to renew now, which are lost, and what a renewal's outcome means."""

    def __init__(self, table: HoldTable, lease_ms: int) -> None:
        self.table = table
        self.period_s = lease_ms / 3000
        # after a failed renewal, retry soon: the lease may still be saved before it runs out
        self.retry_s = min(self.period_s / 4, 1.0)

    def due(self, now: float) -> tuple[Batch, float, list[Hold]]:
        """Renewal calls grouped by script, when to look again, and the holds whose lease ran out unrenewed
        (newly lost). Holds of dead owners are dropped here, unrenewed: their lock expires one lease later."""
        batch: Batch = defaultdict(list)
        wake = math.inf
        lost: list[Hold] = []
        horizon = now + self.period_s / 4  # renew a little early to batch holds that are nearly due
        for hold in self.table:
            if not hold.watchdog or hold.lost:
                continue
            if not hold.alive():
                self.table.remove(hold)
                continue
            if now >= hold.valid_until and not hold.releasing:
                if self.table.mark_lost(hold):
                    lost.append(hold)
                continue
            if hold.next_renewal <= horizon:
                call = hold.spec.renew_call(hold.holder, hold.token, hold.lease_ms)
                batch[call.script].append((hold, call))
            else:
                wake = min(wake, hold.next_renewal)
            wake = min(wake, hold.valid_until)
        return batch, wake, lost

    def expired(self, now: float) -> tuple[list[Hold], float]:
        """Watchdog holds whose lease certainly ran out unrenewed (newly marked lost), and the next time one
        may (for the expiry thread, which does not depend on renewal calls returning on time)."""
        lost: list[Hold] = []
        wake = math.inf
        for hold in self.table:
            if not hold.watchdog or hold.lost or hold.releasing:
                continue
            if now >= hold.valid_until:
                if self.table.contains(hold) and self.table.mark_lost(hold):
                    lost.append(hold)
            else:
                wake = min(wake, hold.valid_until)
        return lost, wake

    @staticmethod
    def deadline(items: list[tuple[Hold, Any]]) -> float:
        """A batch's deadline: the earliest lease it renews (a later reply could not save that lease)."""
        return min(hold.valid_until for hold, _ in items)

    def settle(self, hold: Hold, reply: Any, sent: float) -> bool:
        """Apply one renewal outcome (a reply or an exception); True when the hold is newly lost."""
        if not self.table.contains(hold) or hold.lost:
            return False
        if isinstance(reply, BaseException):
            now = time.monotonic()
            if now < hold.valid_until:
                hold.next_renewal = min(now + self.retry_s, hold.valid_until)
                log.warning("renewing %r failed (%s); retrying in %.2fs", hold.spec.name, reply, self.retry_s)
                return False
        elif int(reply) == 1:
            hold.leased(sent, hold.lease_ms)
            return False
        elif hold.releasing:  # the owner's release got there first
            return False
        return self.table.mark_lost(hold)

    @staticmethod
    def calls(items: list[tuple[Hold, Any]]) -> list[tuple[Any, Any]]:
        """The (keys, args) of one script's renewals, for ``Runner.many``."""
        return [(call.keys, call.args) for _, call in items]

    def settle_all(self, items: list[tuple[Hold, Any]], replies: list[Any] | BaseException, sent: float) -> list[Hold]:
        """Apply a batch's replies (or the exception that failed the whole batch); the newly lost holds."""
        outcomes = [replies] * len(items) if isinstance(replies, BaseException) else replies
        return [hold for (hold, _), reply in zip(items, outcomes, strict=True) if self.settle(hold, reply, sent)]


def callback_of(hold: Hold) -> Callable[[], Any] | None:
    callback: Callable[[], Any] | None = getattr(hold.view, "on_lost", None)
    log.warning("lock %r lost: it expired or was removed while held", hold.spec.name)
    return callback


def fire_lost(hold: Hold) -> Any:
    """Call the view's ``on_lost`` (once per hold); errors are logged, never raised."""
    callback = callback_of(hold)
    if callback is None:
        return None
    try:
        return callback()
    except Exception:
        log.exception("on_lost callback of %r failed", hold.spec.name)
        return None


async def afire_lost(callback: Callable[[], Any], name: str) -> None:
    """Await an ``async def`` ``on_lost`` (in a task of its own); errors are logged."""
    try:
        result = callback()
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("on_lost callback of %r failed", name)


def _logged(callback: Callable[[], Any], name: str) -> Callable[[], None]:
    def run() -> None:
        try:
            callback()
        except Exception:
            log.exception("on_lost callback of %r failed", name)

    return run


class CallbackThreads:
    """Where a sync ``Locks`` runs ``on_lost`` callbacks: up to ``size`` daemon threads named ``name``, started
    when a loss has no idle thread to run it and gone after ``idle_s`` without work. Never the watchdog's
    thread, never the caller's; a mass loss (a Redis restart under 10 000 holds) does not start 10 000 threads,
    and one slow callback delays at most the callbacks queued behind it on its own thread."""

    def __init__(self, name: str, size: int = 4, idle_s: float = 2.0) -> None:
        self.name, self.size, self.idle_s = name, size, idle_s
        self._queue: queue.SimpleQueue[Hold] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, hold: Hold) -> None:
        self._queue.put(hold)
        with self._lock:
            if self._idle > 0 or self._threads >= self.size:
                return
            self._threads += 1
        threading.Thread(target=self._work, name=self.name, daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                hold = self._queue.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._queue.empty():
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
            fire_lost(hold)


_callback_tasks: set[asyncio.Future[Any]] = set()


def report_lost_in_loop(hold: Hold) -> None:
    """``AsyncLocks``: an ``async def`` ``on_lost`` runs as a task of its own, a plain function in the loop's
    default executor (a worker thread), so neither can stall the watchdog task or the caller."""
    callback = callback_of(hold)
    if callback is None:
        return
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any]
    if inspect.iscoroutinefunction(callback):
        fut = loop.create_task(afire_lost(callback, hold.spec.name), name=f"distkit-on-lost-{hold.spec.name}")
    else:
        fut = loop.run_in_executor(None, _logged(callback, hold.spec.name))
    _callback_tasks.add(fut)
    fut.add_done_callback(_callback_tasks.discard)


class _WatchdogBase:
    """A running watchdog looks at the hold table at least every quarter renewal period, so registering a
    hold never has to wake it (no lock on the acquire path): a new hold's first renewal is due one period
    after it was taken, well inside its lease."""

    def __init__(
        self, runner: Any, table: HoldTable, lease_ms: int, name: str, report_lost: Callable[[Hold], None]
    ) -> None:
        self.runner = runner
        self.planner = RenewalPlanner(table, lease_ms)
        self.name = name
        self.report_lost = report_lost
        self._stopped = False

    def _next_look(self, wake: float) -> float:
        """Seconds to sleep: until the next hold is due, and never longer than a quarter period."""
        return max(0.0, min(wake - time.monotonic(), self.planner.period_s / 4))


class Watchdog(_WatchdogBase):
    """A named daemon thread renewing the watchdog holds of one ``Locks`` (and a small expiry thread that
    reports leases running out even while a renewal call hangs); started on first use."""

    def __init__(
        self, runner: Any, table: HoldTable, lease_ms: int, name: str, report_lost: Callable[[Hold], None]
    ) -> None:
        super().__init__(runner, table, lease_ms, name, report_lost)
        self._cv = threading.Condition()  # only to stop promptly
        self._thread: threading.Thread | None = None
        self._expiry: threading.Thread | None = None

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def kick(self, hold: Hold) -> None:
        """A new watchdog hold: make sure the threads run (they find the hold on their next look)."""
        if self._thread is not None:
            return
        with self._cv:
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._expiry = threading.Thread(target=self._watch_expiry, name=f"{self.name}-expiry", daemon=True)
                self._thread.start()
                self._expiry.start()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            threads, self._thread, self._expiry = (self._thread, self._expiry), None, None
            self._cv.notify_all()
        for thread in threads:
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5)

    def _watch_expiry(self) -> None:
        while True:
            with self._cv:
                if self._stopped:
                    return
                lost, wake = self.planner.expired(time.monotonic())
                if not lost:
                    self._cv.wait(self._next_look(wake))
                    continue
            for hold in lost:
                self.report_lost(hold)

    def _run(self) -> None:
        while True:
            with self._cv:
                if self._stopped:
                    return
                batch, wake, lost = self.planner.due(time.monotonic())
                if not batch and not lost:
                    self._cv.wait(self._next_look(wake))
                    continue
            for hold in lost:
                self.report_lost(hold)
            for script, items in batch.items():
                sent = time.monotonic()
                try:
                    replies: list[Any] | BaseException = self.runner.many(
                        script, self.planner.calls(items), deadline=self.planner.deadline(items)
                    )
                except Exception as exc:  # the whole batch failed (connection): every hold retries
                    replies = exc
                for hold in self.planner.settle_all(items, replies, sent):
                    self.report_lost(hold)


class AsyncWatchdog(_WatchdogBase):
    """The asyncio twin of :class:`Watchdog`: one task in the loop that first needed it. Each renewal is
    bounded by its leases' deadline here too (``asyncio.wait_for``)."""

    def __init__(
        self, runner: Any, table: HoldTable, lease_ms: int, name: str, report_lost: Callable[[Hold], None]
    ) -> None:
        super().__init__(runner, table, lease_ms, name, report_lost)
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def kick(self, hold: Hold) -> None:
        if not self._stopped and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, RuntimeError):
                pass

    async def _run(self) -> None:
        while not self._stopped:
            batch, wake, lost = self.planner.due(time.monotonic())
            for hold in lost:
                self.report_lost(hold)
            if not batch:
                await asyncio.sleep(self._next_look(wake))
                continue
            for script, items in batch.items():
                sent = time.monotonic()
                deadline = self.planner.deadline(items)
                try:
                    replies: list[Any] | BaseException = await asyncio.wait_for(
                        self.runner.many(script, self.planner.calls(items), deadline=deadline),
                        max(0.0, deadline - time.monotonic()),
                    )
                except Exception as exc:  # asyncio.TimeoutError included: the leases' deadline passed
                    replies = exc
                for hold in self.planner.settle_all(items, replies, sent):
                    self.report_lost(hold)
