"""Who owns a hold, and what this process believes it holds.

An *owner* is a (``Locks`` instance, thread) or (``AsyncLocks`` instance, asyncio task) pair, written as
``"<instance id>:<serial>"``. Serials are never reused, so a new thread cannot inherit a dead thread's lock
(``threading.get_ident`` values are reused); the instance id changes in a forked child, so a child never
passes for its parent.

:class:`HoldTable` is the local mirror of the holds in Redis: count, fencing token, lease and whether the
watchdog renews it. Lock views, the watchdog and ``release`` share it; it is guarded by one lock because the
watchdog thread reads it while user threads change it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distkit import _metrics

if TYPE_CHECKING:
    from distkit.locks.specs import Spec

_LOSSES = _metrics.counter("distkit.locks.losses", "1", "holds found gone while held (on_lost fires once each)")
_LOSS_ATTRS = {k: {"kind": v} for k, v in {"x": "lock", "r": "read", "w": "write", "s": "semaphore"}.items()}

_serials = itertools.count(1)
_thread_serial = threading.local()
_task_serials: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = weakref.WeakKeyDictionary()


def thread_serial() -> int:
    """This thread's serial (assigned on first use, never reused)."""
    try:
        return _thread_serial.value  # type: ignore[no-any-return]
    except AttributeError:
        _thread_serial.value = serial = next(_serials)
        return serial


class _ThreadSentinel:
    """Lives in a thread-local slot: CPython drops it when its thread ends, however the thread was started."""

    __slots__ = ("__weakref__",)


_thread_alive = threading.local()


def thread_alive() -> Callable[[], bool]:
    """Whether the current thread still runs: the watchdog stops renewing once it turns False.

    ``Thread.is_alive`` is not enough: a thread started with ``_thread.start_new_thread`` (C extensions,
    embedding hosts) is a ``_DummyThread`` whose ``is_alive()`` stays True after it ended. A sentinel kept in a
    thread-local slot is released when the thread's state is cleared at exit, for every kind of thread.
    """
    try:
        return _thread_alive.check  # type: ignore[no-any-return]
    except AttributeError:
        sentinel = _ThreadSentinel()
        ref = weakref.ref(sentinel)
        _thread_alive.sentinel = sentinel

        def check() -> bool:
            return ref() is not None

        _thread_alive.check = check
        return check


def current_task() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    if task is None:
        from distkit.errors import LockError

        raise LockError("AsyncLocks must be used from inside an asyncio task (the task is the lock owner)")
    return task


def in_task() -> bool:
    """Whether the caller runs inside an asyncio task (False outside a running loop, or in a loop callback)."""
    try:
        return asyncio.current_task() is not None
    except RuntimeError:
        return False


def task_serial() -> int:
    """The current asyncio task's serial (assigned on first use, never reused)."""
    task = current_task()
    serial = _task_serials.get(task)
    if serial is None:
        _task_serials[task] = serial = next(_serials)
    return serial


def task_alive() -> Callable[[], bool]:
    task = current_task()
    return lambda: not task.done()


@dataclass(eq=False, slots=True)
class Hold:
    """One hold this process has in Redis (a reentrant hold counts once, with ``count`` > 1)."""

    spec: Spec
    holder: str
    alive: Callable[[], bool]
    token: bytes  # as Redis returned it (the fencing token's digits)
    count: int
    lease_ms: int
    watchdog: bool
    valid_until: float  # time.monotonic(): the lease certainly runs at least until then
    next_renewal: float
    view: Any = None  # the lock view whose ``on_lost`` is called
    lost: bool = False
    releasing: bool = False
    units: int = 1  # permits of a semaphore hold
    release_started: float | None = None  # first attempt of a release whose outcome is unknown (outage)

    def leased(self, sent_at: float, lease_ms: int) -> None:
        """A call sent at ``sent_at`` (re)started the lease: it lasts at least until ``sent_at + lease``."""
        lease_s = lease_ms / 1000
        # 0.1 % + 1 ms of slack for clock-rate differences between this host and Redis
        self.valid_until = max(self.valid_until, sent_at + lease_s * 0.999 - 0.001)
        self.next_renewal = sent_at + lease_s / 3


@dataclass(eq=False)
class HoldTable:
    """The holds of one ``Locks`` instance, by (spec key, holder)."""

    _holds: dict[tuple[str, str], Hold] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _adds: int = 0
    acquiring: set[tuple[str, str]] = field(default_factory=set)  # (spec key, holder) with an acquire under way

    def get(self, key: str, holder: str) -> Hold | None:
        return self._holds.get((key, holder))

    def add(self, hold: Hold) -> None:
        with self._lock:
            self._holds[(hold.spec.hold_key, hold.holder)] = hold
            self._adds += 1
            if self._adds % 256 == 0:
                self._forget_abandoned()

    def _forget_abandoned(self) -> None:
        """Drop holds whose owner died without releasing and whose lease has run out (Redis forgot them too),
        so a program whose threads crash while holding leased locks does not grow this table forever."""
        now = time.monotonic()
        for k, h in list(self._holds.items()):
            if now > h.valid_until and not h.alive():
                del self._holds[k]

    def mark_lost(self, hold: Hold) -> bool:
        """Mark ``hold`` lost; True only for the first caller (``on_lost`` fires once per hold)."""
        with self._lock:
            if hold.lost:
                return False
            hold.lost = True
        _LOSSES.add(1, _LOSS_ATTRS.get(hold.spec.kind) or {"kind": hold.spec.kind})
        return True

    def remove(self, hold: Hold) -> None:
        with self._lock:
            if self._holds.get((hold.spec.hold_key, hold.holder)) is hold:
                del self._holds[(hold.spec.hold_key, hold.holder)]

    def contains(self, hold: Hold) -> bool:
        return self._holds.get((hold.spec.hold_key, hold.holder)) is hold

    def snapshot(self) -> list[Hold]:
        with self._lock:
            return list(self._holds.values())

    def clear(self) -> None:
        with self._lock:
            self._holds.clear()

    def __len__(self) -> int:
        return len(self._holds)

    def __iter__(self) -> Iterator[Hold]:
        return iter(self.snapshot())


def now() -> float:
    return time.monotonic()
