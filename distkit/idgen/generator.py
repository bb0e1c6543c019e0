"""The id generator core shared by :class:`Snowflake` and :class:`Butterfly`.

One lock, one clock read and a few integer operations per id on the hot path. The decisions (what to do
when the clock went back, when the sequence wrapped, when the generator ran ahead of time) live in
:meth:`IdGenerator._slow_path`, taken only when the current millisecond is not simply newer than the
last one.

``RollbackPolicy.LOGICAL`` (and Butterfly) keep a *virtual clock* that follows the real clock forward
but ignores backward jumps. The generator continues from its last timestamp after a rollback and
advances a millisecond logically when the sequence wraps; it may run at most ``max_ahead_ms`` ahead of
the virtual clock (then it sleeps), so a burst cannot push timestamps far into the future, and a
rollback, however large, never stops it.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from distkit.clock import Clock, sleeper_for
from distkit.errors import (
    ClockMovedBackwardsError,
    ForkedGeneratorError,
    InvalidEpochError,
    InvalidWorkerIdError,
    TimestampExhaustedError,
)
from distkit.idgen.layout import DEFAULT_EPOCH_MS, IdParts, Layout, decode

if TYPE_CHECKING:
    from distkit.idgen.lease.base import WorkerLease

_time_ns = time.time_ns
G = TypeVar("G", bound="IdGenerator")


class RollbackPolicy(enum.Enum):
    """What to do when the clock reads earlier than the last id's timestamp."""

    WAIT = "wait"  # sleep until the clock catches up if the jump is <= max_rollback_wait_ms, else raise
    RAISE = "raise"  # raise ClockMovedBackwardsError at once
    LOGICAL = "logical"  # continue from the last timestamp (Butterfly-style), never stop


class IdGenerator:
    """Thread-safe, fork-aware 63-bit id generator (see :class:`Snowflake` / :class:`Butterfly`)."""

    def __init__(
        self,
        *,
        worker_id: int,
        datacenter_id: int,
        epoch_ms: int,
        layout: Layout,
        rollback: RollbackPolicy,
        max_rollback_wait_ms: int,
        max_ahead_ms: int,
        clock: Clock | None,
        lease: WorkerLease | None = None,
    ) -> None:
        if not isinstance(layout, Layout):
            raise InvalidWorkerIdError(f"layout must be a distkit.idgen.Layout, got {type(layout).__name__}")
        if not isinstance(rollback, RollbackPolicy):
            raise InvalidWorkerIdError(f"rollback must be a RollbackPolicy, got {rollback!r}")
        _check_range("worker_id", worker_id, layout.max_worker_id, layout.worker_bits)
        _check_range("datacenter_id", datacenter_id, layout.max_datacenter_id, layout.datacenter_bits)
        if max_rollback_wait_ms < 0 or max_ahead_ms < 0:
            raise InvalidWorkerIdError("max_rollback_wait_ms and max_ahead_ms must be >= 0")
        self.layout = layout
        self.epoch_ms = epoch_ms
        self.rollback = rollback
        self.max_rollback_wait_ms = max_rollback_wait_ms
        self.max_ahead_ms = max_ahead_ms
        self._clock = clock
        self._sleep = sleeper_for(clock) if clock is not None else time.sleep
        now = self._now()
        if now < 0:
            raise InvalidEpochError(f"epoch_ms={epoch_ms} is {-now} ms in the future; use a past epoch")
        if now > layout.max_timestamp:
            raise TimestampExhaustedError(
                f"the {layout.timestamp_bits}-bit timestamp field ran out at "
                f"{self.exhausts_at.isoformat()} for epoch_ms={epoch_ms}"
            )
        self.worker_id = worker_id
        self.datacenter_id = datacenter_id
        self._node = (datacenter_id << layout.datacenter_shift) | (worker_id << layout.worker_shift)
        self._ts_shift = layout.timestamp_shift
        self._max_seq = layout.max_sequence
        self._lock = threading.Lock()
        self._last = -1  # timestamp offset of the last id
        self._seq = 0
        self._vclock = now  # LOGICAL: follows the clock forward only
        self._last_clock = now
        self._lease = lease
        self._forked = False
        self._guarded = lease is not None
        if lease is not None:
            self._resume_from(lease.high_water_ms - epoch_ms)
            lease.bind(self)
        os.register_at_fork(after_in_child=_after_fork_hook(weakref.ref(self)))

    # -- public ------------------------------------------------------------------------------------
    @classmethod
    def from_lease(cls: type[G], lease: WorkerLease, **kwargs: Any) -> G:
        """A generator whose worker id comes from ``lease`` (acquired now, heartbeated, re-leased after fork).
        If the generator cannot start (e.g. the clock is behind the persisted mark) the id is released again."""
        lease.acquire()
        try:
            return cls(worker_id=lease.worker_id, lease=lease, **kwargs)
        except BaseException:
            lease.close()
            raise

    @property
    def exhausts_at(self) -> dt.datetime:
        """When this generator's timestamp field runs out (so you can see it coming)."""
        return self.layout.exhausts_at(self.epoch_ms)

    @property
    def high_water_ms(self) -> int:
        """Unix ms of the newest id issued (or the resume mark); leases persist it."""
        return max(self._last, 0) + self.epoch_ms

    def next_id(self) -> int:
        """A new id: unique for this (datacenter, worker), increasing within this generator."""
        with self._lock:
            if self._guarded:
                self._check_usable()
            now = (_time_ns() // 1_000_000 - self.epoch_ms) if self._clock is None else self._now()
            if now > self._last and self.rollback is not RollbackPolicy.LOGICAL:
                self._last = now
                self._seq = 0
                if now > self.layout.max_timestamp:
                    self._exhausted()
                return (now << self._ts_shift) | self._node
            ts, seq = self._slow_path(now, 1)
            return (ts << self._ts_shift) | self._node | seq

    def next_ids(self, n: int) -> list[int]:
        """``n`` ids with the same guarantees as :meth:`next_id`, built per millisecond as integer ranges."""
        if n < 0:
            raise InvalidWorkerIdError(f"n must be >= 0, got {n}")
        out: list[int] = []
        with self._lock:
            if self._guarded:
                self._check_usable()
            while len(out) < n:
                ts, seq = self._slow_path(self._now(), n - len(out))
                first = (ts << self._ts_shift) | self._node | seq
                out.extend(range(first, first + (self._seq - seq) + 1))
        return out

    def decode(self, value: int) -> IdParts:
        """The fields of ``value`` under this generator's layout and epoch."""
        return decode(value, layout=self.layout, epoch_ms=self.epoch_ms)

    def close(self) -> None:
        """Release the worker-id lease, if any (the generator stops issuing)."""
        if self._lease is not None:
            self._lease.close()

    def __enter__(self) -> IdGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------------
    def _now(self) -> int:
        raw = self._clock() if self._clock is not None else _time_ns() // 1_000_000
        return raw - self.epoch_ms

    def _check_usable(self) -> None:
        if self._forked:
            raise ForkedGeneratorError(
                f"this generator (static worker_id={self.worker_id}) was created before os.fork(); using it in "
                "the child would duplicate the parent's ids. Create a new generator in the child, or use "
                "Snowflake.from_lease(...) which re-leases a worker id after fork"
            )
        if self._lease is not None:
            self._lease.check()

    def _slow_path(self, now: int, want: int) -> tuple[int, int]:
        """Reserve up to ``want`` sequence numbers; returns ``(ts, first_seq)`` and leaves ``_seq`` at the last.

        Called with the lock held."""
        last = self._last
        if self.rollback is RollbackPolicy.LOGICAL:
            now = self._logical_now(now)
        elif now < last:
            now = self._handle_rollback(now, last)
        if now > last:
            self._last, self._seq = now, min(want, self._max_seq + 1) - 1
            first = 0
        elif self._seq < self._max_seq:  # same millisecond, sequence left
            first = self._seq + 1
            self._seq = min(self._max_seq, self._seq + want)
        else:  # sequence exhausted in this millisecond
            nxt = self._logical_next(last) if self.rollback is RollbackPolicy.LOGICAL else self._wait_past(last)
            self._last, self._seq = nxt, min(want, self._max_seq + 1) - 1
            first = 0
        if self._last > self.layout.max_timestamp:
            self._exhausted()
        return self._last, first

    def _logical_now(self, now: int) -> int:
        if now > self._last_clock:
            self._vclock += now - self._last_clock
        self._last_clock = now
        return max(self._vclock, self._last)

    def _logical_next(self, last: int) -> int:
        """Advance one millisecond logically, sleeping while that would be > max_ahead_ms ahead of time."""
        while last + 1 - self._vclock > self.max_ahead_ms:
            self._sleep((last + 1 - self._vclock - self.max_ahead_ms) / 1000)
            self._logical_now(self._now())
        return last + 1

    def _handle_rollback(self, now: int, last: int) -> int:
        back = last - now
        if self.rollback is RollbackPolicy.WAIT and back <= self.max_rollback_wait_ms:
            return self._wait_until(last)
        raise ClockMovedBackwardsError(
            f"clock moved back {back} ms (> max_rollback_wait_ms={self.max_rollback_wait_ms}) "
            f"under RollbackPolicy.{self.rollback.name}; use RollbackPolicy.LOGICAL or Butterfly, or fix NTP "
            "(slew, don't step)",
            backwards_ms=back,
        )

    def _wait_past(self, last: int) -> int:
        return self._wait_until(last + 1)

    def _wait_until(self, target: int) -> int:
        """Block until the clock reads >= ``target``: spin for the real clock (sub-ms), sleep for others."""
        while True:
            now = self._now()
            if now >= target:
                return now
            if self._clock is None and target - now <= 1:
                continue  # spin: sleeping would overshoot the millisecond
            self._sleep((target - now) / 1000)

    def _resume_from(self, mark: int) -> None:
        """Never issue at or below a persisted high-water mark (restart after a clock rollback)."""
        if mark <= self._last:
            return
        now = self._now()
        if self.rollback is RollbackPolicy.LOGICAL:
            self._vclock = max(self._vclock, mark)  # Butterfly reads time once: the mark is "now"
        elif now < mark:
            wait_ms = mark - now
            limit = max(self.max_rollback_wait_ms, self._lease.ttl_ms if self._lease is not None else 0)
            if wait_ms > limit:
                raise ClockMovedBackwardsError(
                    f"clock is {wait_ms} ms behind this worker id's persisted high-water mark; refusing to "
                    "issue ids that could repeat. Fix the clock or use Butterfly / RollbackPolicy.LOGICAL",
                    backwards_ms=wait_ms,
                )
            self._wait_until(mark)
        self._last, self._seq = mark, self._max_seq  # next id goes to the following millisecond

    def _exhausted(self) -> None:
        raise TimestampExhaustedError(
            f"the {self.layout.timestamp_bits}-bit timestamp field ran out at "
            f"{self.exhausts_at.isoformat()} (epoch_ms={self.epoch_ms}); choose a "
            "later epoch or a wider timestamp field"
        )

    def _rebind_worker(self, worker_id: int) -> None:
        """Used by leases after fork: switch to a newly leased worker id."""
        self.worker_id = worker_id
        self._node = (self.datacenter_id << self.layout.datacenter_shift) | (worker_id << self.layout.worker_shift)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        if self._lease is None:
            self._forked = True
            self._guarded = True
        else:
            self._lease.after_fork_in_child(self)


def _after_fork_hook(ref: weakref.ref[IdGenerator]) -> Callable[[], None]:
    def hook() -> None:
        gen = ref()
        if gen is not None:
            gen._after_fork_in_child()

    return hook


def _check_range(name: str, value: Any, maximum: int, bits: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise InvalidWorkerIdError(f"{name} must be an int in 0..{maximum} for a {bits}-bit field, got {value!r}")


class Snowflake(IdGenerator):
    """Twitter-style ids: 41-bit ms timestamp, 5-bit datacenter, 5-bit worker, 12-bit sequence by default.

    >>> gen = Snowflake(worker_id=7, datacenter_id=1)
    >>> a, b = gen.next_id(), gen.next_id()
    >>> a < b and gen.decode(b).worker_id == 7
    True
    """

    def __init__(
        self,
        worker_id: int,
        datacenter_id: int = 0,
        epoch_ms: int = DEFAULT_EPOCH_MS,
        layout: Layout | None = None,
        rollback: RollbackPolicy = RollbackPolicy.WAIT,
        max_rollback_wait_ms: int = 5,
        clock: Clock | None = None,
        *,
        max_ahead_ms: int = 2000,
        lease: WorkerLease | None = None,
    ) -> None:
        from distkit.idgen.layout import SNOWFLAKE

        super().__init__(
            worker_id=worker_id,
            datacenter_id=datacenter_id,
            epoch_ms=epoch_ms,
            layout=layout or SNOWFLAKE,
            rollback=rollback,
            max_rollback_wait_ms=max_rollback_wait_ms,
            max_ahead_ms=max_ahead_ms,
            clock=clock,
            lease=lease,
        )


class Butterfly(IdGenerator):
    """Butterfly-style ids: 41-bit timestamp, 13-bit worker, 9-bit sequence; a backwards clock never stops it.

    It continues from its own last timestamp after any rollback, advances logically when the sequence
    wraps, and sleeps only when that would put it more than ``max_ahead_ms`` ahead of time.
    """

    def __init__(
        self,
        worker_id: int,
        epoch_ms: int = DEFAULT_EPOCH_MS,
        layout: Layout | None = None,
        max_ahead_ms: int = 2000,
        clock: Clock | None = None,
        *,
        datacenter_id: int = 0,
        lease: WorkerLease | None = None,
    ) -> None:
        from distkit.idgen.layout import BUTTERFLY

        super().__init__(
            worker_id=worker_id,
            datacenter_id=datacenter_id,
            epoch_ms=epoch_ms,
            layout=layout or BUTTERFLY,
            rollback=RollbackPolicy.LOGICAL,
            max_rollback_wait_ms=0,
            max_ahead_ms=max_ahead_ms,
            clock=clock,
            lease=lease,
        )
