"""Lease renewal for holds taken without ``lease_ms``: one thread (or task) per ``Locks``.

Redisson's watchdog kept renewing after the owning thread had died (redisson#3521, #5115, #6198), so a crashed
worker's lock lived forever. Here a hold is renewed only while its owner thread / task is alive; once the
owner is gone the hold is dropped and the lock expires one lease later. A renewal that finds the hold gone
(key deleted, Redis restarted, lease ran out during a long outage) marks it lost and calls ``on_lost`` once.

:class:`RenewalPlanner` decides (no I/O); :class:`Watchdog` and :class:`AsyncWatchdog` only run it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
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
    """Which holds to renew now, and what a renewal's outcome means."""

    def __init__(self, table: HoldTable, lease_ms: int) -> None:
        self.table = table
        self.period_s = lease_ms / 3000
        # after a failed renewal, retry soon: the lease may still be saved before it runs out
        self.retry_s = min(self.period_s / 4, 1.0)

    def due(self, now: float) -> tuple[Batch, float]:
        """Renewal calls grouped by script, and when to look again. Holds of dead owners are dropped here,
        unrenewed: their lock expires one lease later (no renewal after death)."""
        batch: Batch = defaultdict(list)
        wake = math.inf
        horizon = now + self.period_s / 4  # renew a little early to batch holds that are nearly due
        for hold in self.table:
            if not hold.watchdog or hold.lost:
                continue
            if not hold.alive():
                self.table.remove(hold)
                continue
            if hold.next_renewal <= horizon:
                call = hold.spec.renew_call(hold.holder, hold.token, hold.lease_ms)
                batch[call.script].append((hold, call))
            else:
                wake = min(wake, hold.next_renewal)
        return batch, wake

    def settle(self, hold: Hold, reply: Any, sent: float) -> bool:
        """Apply one renewal outcome (a reply or an exception); True when the hold is newly lost."""
        if not self.table.contains(hold) or hold.lost:
            return False
        if isinstance(reply, BaseException):
            if time.monotonic() < hold.valid_until:
                hold.next_renewal = time.monotonic() + self.retry_s
                log.warning("renewing %r failed (%s); retrying in %.2fs", hold.spec.name, reply, self.retry_s)
                return False
        elif int(reply) == 1:
            hold.leased(sent, hold.lease_ms)
            return False
        elif hold.releasing:  # the owner's release got there first
            return False
        hold.lost = True
        return True

    @staticmethod
    def calls(items: list[tuple[Hold, Any]]) -> list[tuple[Any, Any]]:
        """The (keys, args) of one script's renewals, for ``Script.many``."""
        return [(call.keys, call.args) for _, call in items]

    def settle_all(self, items: list[tuple[Hold, Any]], replies: list[Any] | BaseException, sent: float) -> list[Hold]:
        """Apply a batch's replies (or the exception that failed the whole batch); the newly lost holds."""
        outcomes = [replies] * len(items) if isinstance(replies, BaseException) else replies
        return [hold for (hold, _), reply in zip(items, outcomes, strict=True) if self.settle(hold, reply, sent)]


def fire_lost(hold: Hold) -> Any:
    """Call the view's ``on_lost`` (once per hold); errors are logged, never raised into the watchdog."""
    callback: Callable[[], Any] | None = getattr(hold.view, "on_lost", None)
    log.warning("lock %r lost: the watchdog could not renew it", hold.spec.name)
    if callback is None:
        return None
    try:
        return callback()
    except Exception:
        log.exception("on_lost callback of %r failed", hold.spec.name)
        return None


class _WatchdogBase:
    """A running watchdog looks at the hold table at least every quarter renewal period, so registering a
    hold never has to wake it (no lock on the acquire path): a new hold's first renewal is due one period
    after it was taken, well inside its lease."""

    def __init__(self, client: Any, table: HoldTable, lease_ms: int, name: str) -> None:
        self.client = client
        self.planner = RenewalPlanner(table, lease_ms)
        self.name = name
        self._stopped = False

    def _next_look(self, wake: float) -> float:
        """Seconds to sleep: until the next hold is due, and never longer than a quarter period."""
        return max(0.0, min(wake - time.monotonic(), self.planner.period_s / 4))


class Watchdog(_WatchdogBase):
    """A named daemon thread renewing the watchdog holds of one ``Locks``; started on first use."""

    def __init__(self, client: Any, table: HoldTable, lease_ms: int, name: str) -> None:
        super().__init__(client, table, lease_ms, name)
        self._cv = threading.Condition()  # only to stop promptly
        self._thread: threading.Thread | None = None

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def kick(self, hold: Hold) -> None:
        """A new watchdog hold: make sure the thread runs (it finds the hold on its next look)."""
        if self._thread is not None:
            return
        with self._cv:
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            thread, self._thread = self._thread, None
            self._cv.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cv:
                if self._stopped:
                    return
                batch, wake = self.planner.due(time.monotonic())
                if not batch:
                    self._cv.wait(self._next_look(wake))
                    continue
            for script, items in batch.items():
                sent = time.monotonic()
                try:
                    replies: list[Any] | BaseException = script.many(self.client, self.planner.calls(items))
                except Exception as exc:  # the whole batch failed (connection): every hold retries
                    replies = exc
                for hold in self.planner.settle_all(items, replies, sent):
                    fire_lost(hold)


class AsyncWatchdog(_WatchdogBase):
    """The asyncio twin of :class:`Watchdog`: one task in the loop that first needed it."""

    def __init__(self, client: Any, table: HoldTable, lease_ms: int, name: str) -> None:
        super().__init__(client, table, lease_ms, name)
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
            batch, wake = self.planner.due(time.monotonic())
            if not batch:
                await asyncio.sleep(self._next_look(wake))
                continue
            for script, items in batch.items():
                sent = time.monotonic()
                try:
                    replies: list[Any] | BaseException = await script.amany(self.client, self.planner.calls(items))
                except Exception as exc:
                    replies = exc
                for hold in self.planner.settle_all(items, replies, sent):
                    result = fire_lost(hold)
                    if inspect.isawaitable(result):
                        await result
