"""The id generator core shared by :class:`Snowflake` and :class:`Butterfly`.

Hot path: one lock, one clock read and a few integer comparisons per id. Two inline cases cover almost every
call: *same millisecond, sequence left* and *a newer millisecond that is within the limit*. The limit
(``_limit``) is the largest timestamp this generator may issue: the layout's last timestamp for a static
generator, and for a leased one also the lease's known-valid deadline (see :mod:`distkit.idgen.lease.base`).
The clock is read **first** and the value compared with the limit afterwards, so a pause (GC, SIGSTOP)
anywhere in ``next_id`` can only delay an id whose timestamp was already allowed, never issue one past the
deadline. Everything else (rollback, sequence wrap, logical time, lease renewal, closed / forked states)
lives in :meth:`IdGenerator._next_slow`.

``RollbackPolicy.LOGICAL`` (and Butterfly) keep a *virtual clock* that follows the real clock forward
but ignores backward jumps. The generator continues from its last timestamp after a rollback and
advances a millisecond logically when the sequence wraps; with a lease it may run at most ``max_ahead_ms``
ahead of the virtual clock (the lease's persisted mark covers that). A static generator never runs ahead
unless ``max_ahead_ms`` is given explicitly, in which case it waits ``max_ahead_ms`` at start, so that a restart
never lands below where the previous incarnation may have reached.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, TypeVar

from distkit import _metrics
from distkit.clock import Clock, sleeper_for
from distkit.errors import (
    ChildWorkerLeaseError,
    ClockMovedBackwardsError,
    ForkedGeneratorError,
    GeneratorClosedError,
    InvalidCountError,
    InvalidEpochError,
    InvalidLayoutError,
    InvalidRollbackPolicyError,
    InvalidTimeLimitError,
    InvalidWorkerIdError,
    TimestampExhaustedError,
    WorkerLeaseLostError,
)
from distkit.idgen.layout import BUTTERFLY, DEFAULT_EPOCH_MS, SNOWFLAKE, IdParts, Layout, check_epoch, decode

if TYPE_CHECKING:
    from distkit.idgen.lease.base import WorkerLease

_time_ns = time.time_ns
G = TypeVar("G", bound="IdGenerator")

_LIVE: weakref.WeakSet[IdGenerator] = weakref.WeakSet()
_RETIRED: dict[str, int] = {}  # ids issued by generators since garbage-collected, per class (see __del__)


def _issued() -> list[tuple[float, dict[str, str]]]:
    """Ids issued so far in this process, per generator class (read at metric collection): the live generators'
    counts plus what collected ones had issued, so the counter never goes down when a generator is dropped."""
    live = list(_LIVE)  # strong references first: a generator missing here has already retired its count
    totals = dict(_RETIRED)
    for gen in live:
        with gen._lock:
            n = gen._issued_count()
        kind = type(gen).__name__.lower()
        totals[kind] = totals.get(kind, 0) + n
    return [(float(n), {"generator": kind}) for kind, n in totals.items()]


_IDS = _metrics.observable_counter("distkit.idgen.ids", "1", "ids issued by live generators", _issued)
_ROLLBACKS = _metrics.counter("distkit.idgen.clock_rollbacks", "1",
                              "backward clock jumps seen by non-logical generators, waited out or raised")
_LEASE_LOSSES = _metrics.counter("distkit.idgen.lease_losses", "1", "worker-id leases lost while issuing")


def _after_fork_in_child() -> None:
    for gen in list(_LIVE):
        gen._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)  # one hook for every generator (weakly held)

# why a generator does not issue ids (None: it does); set together with _limit = -1
_CLOSED = "closed"
_FORKED = "forked"  # static worker id in a forked child
_CHILD = "child"  # leased, in a forked child, not re-leased yet (done lazily by the first next_id)
_CHILD_FAILED = "child-failed"
_UNBOUND = "unbound"  # leased generator whose lease has not been renewed yet
_LOST = "lost"


class RollbackPolicy(enum.Enum):
    """What to do when the clock reads earlier than the last id's timestamp."""

    WAIT = "wait"  # sleep until the clock catches up if the jump is <= max_rollback_wait_ms, else raise
    RAISE = "raise"  # raise ClockMovedBackwardsError at once
    LOGICAL = "logical"  # continue from the last timestamp (Butterfly-style), never stop


def _check_ms(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidTimeLimitError(f"{name} must be an int >= 0 (milliseconds), got {value!r}")
    return value


class IdGenerator:
    """Thread-safe, fork-aware 63-bit id generator (see :class:`Snowflake` / :class:`Butterfly`)."""

    default_layout = SNOWFLAKE

    def __init__(
        self,
        *,
        worker_id: int,
        datacenter_id: int,
        epoch_ms: int,
        layout: Layout,
        rollback: RollbackPolicy,
        max_rollback_wait_ms: int,
        max_ahead_ms: int | None,
        clock: Clock | None,
        lease: WorkerLease | None = None,
    ) -> None:
        if not isinstance(layout, Layout):
            raise InvalidLayoutError(f"layout must be a distkit.idgen.Layout, got {type(layout).__name__}")
        if not isinstance(rollback, RollbackPolicy):
            raise InvalidRollbackPolicyError(f"rollback must be a distkit.idgen.RollbackPolicy, got {rollback!r}")
        _check_range("worker_id", worker_id, layout.max_worker_id, layout.worker_bits)
        _check_range("datacenter_id", datacenter_id, layout.max_datacenter_id, layout.datacenter_bits)
        _check_ms("max_rollback_wait_ms", max_rollback_wait_ms)
        if max_ahead_ms is not None:
            _check_ms("max_ahead_ms", max_ahead_ms)
        check_epoch(epoch_ms)
        if clock is not None and not callable(clock):
            raise InvalidTimeLimitError(f"clock must be a callable returning unix ms, got {clock!r}")
        self.layout = layout
        self.epoch_ms = epoch_ms
        self.rollback = rollback
        self.max_rollback_wait_ms = max_rollback_wait_ms
        self._clock = clock
        self._sleep = sleeper_for(clock) if clock is not None else time.sleep
        logical = rollback is RollbackPolicy.LOGICAL
        self._logical = logical
        if lease is not None:  # bursts may borrow time: the lease's mark covers it (at most half a ttl)
            ahead = 2000 if max_ahead_ms is None else max_ahead_ms
            ahead = min(ahead, lease.ttl_ms // 2)
        else:  # static: never ahead, unless asked for (then wait it out now, see below)
            ahead = 0 if max_ahead_ms is None else max_ahead_ms
        self.max_ahead_ms = ahead  # the effective bound (0 for static generators unless asked for)
        self._ahead = ahead if logical else 0
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
        self._max_ts = layout.max_timestamp
        self._lock = threading.Lock()
        self._last = -1  # timestamp offset of the last id
        self._seq = 0
        self._done = -1  # ids issued in finished milliseconds (-1: the first new millisecond adds _seq + 1 = 1)
        self._base = 0  # (last << ts_shift) | node: the same-millisecond path adds the sequence
        self._vclock = now  # LOGICAL: follows the clock forward only
        self._last_clock = now
        self._lease = lease
        self._blocked: str | None = None
        self._child_error: BaseException | None = None
        self._limit = -1
        self._fast_limit = -1  # _limit for the inline new-millisecond path; -1 for logical generators
        _LIVE.add(self)
        _IDS.bind()  # registers the ids callback with a meter provider installed since the last generator
        if lease is None:
            if logical and ahead > 0:
                self._sleep(ahead / 1000)  # a previous incarnation may have run up to `ahead` ms ahead
                self._logical_now(self._now())
            self._set_limit(self._max_ts)
        else:
            self._blocked = _UNBOUND
            self._start_lease()

    # -- public ------------------------------------------------------------------------------------
    @classmethod
    def from_lease(cls: type[G], lease: WorkerLease, **kwargs: Any) -> G:
        """A generator whose worker id comes from ``lease`` (acquired now, heartbeated, re-leased after fork).

        The lease hands out ids from the generator's layout: the worker field if you pass ``datacenter_id``,
        else the whole node space (datacenter + worker bits, split into the two fields). An explicit
        ``max_worker_id`` on the lease must fit. If the generator cannot start (e.g. the clock is behind the
        persisted mark) the id is released again, its mark unchanged."""
        layout = kwargs.get("layout") or cls.default_layout
        if not isinstance(layout, Layout):
            raise InvalidLayoutError(f"layout must be a distkit.idgen.Layout, got {type(layout).__name__}")
        split = "datacenter_id" not in kwargs
        space = (1 << (layout.datacenter_bits + layout.worker_bits)) - 1 if split else layout.max_worker_id
        lease._use_range(space, split)
        lease.acquire()
        try:
            node = lease.worker_id
            if split:
                kwargs["datacenter_id"] = node >> layout.worker_bits
                node &= layout.max_worker_id
            return cls(worker_id=node, lease=lease, **kwargs)
        except BaseException:
            lease.close()
            raise

    @property
    def exhausts_at(self) -> dt.datetime:
        """When this generator's timestamp field runs out (so you can see it coming)."""
        return self.layout.exhausts_at(self.epoch_ms)

    @property
    def high_water_ms(self) -> int:
        """Unix ms of the newest id issued (or the resume mark); leases persist it on release."""
        return max(self._last, 0) + self.epoch_ms

    @property
    def closed(self) -> bool:
        return self._blocked == _CLOSED

    def _issued_count(self) -> int:
        return self._done + self._seq + 1  # ids of finished milliseconds + of the current one

    def __del__(self) -> None:
        # what this generator issued stays in distkit.idgen.ids: an observable counter must never go down
        try:
            kind = type(self).__name__.lower()
            _RETIRED[kind] = _RETIRED.get(kind, 0) + self._issued_count()
        except Exception:  # a half-built generator, or interpreter shutdown
            pass

    def next_id(self) -> int:
        """A new id: unique for this (datacenter, worker), increasing within this generator."""
        with self._lock:
            now = (_time_ns() // 1_000_000 if self._clock is None else self._clock()) - self.epoch_ms
            last = self._last
            if now == last:
                seq = self._seq + 1
                if seq <= self._max_seq:
                    self._seq = seq
                    return self._base | seq
            elif last < now <= self._fast_limit:  # read the clock, then compare with the deadline
                self._last = now
                self._done += self._seq + 1
                self._seq = 0
                self._base = base = (now << self._ts_shift) | self._node
                return base
            _, seq = self._next_slow(now, 1)
            return self._base | seq

    def next_ids(self, n: int) -> list[int]:
        """``n`` ids with the same guarantees as :meth:`next_id`, built per millisecond as integer ranges."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise InvalidCountError(f"n must be an int >= 0, got {n!r}")
        out: list[int] = []
        with self._lock:
            while len(out) < n:
                _, seq = self._next_slow(self._now(), n - len(out))
                first = self._base | seq
                out.extend(range(first, first + (self._seq - seq) + 1))
        return out

    def decode(self, value: int) -> IdParts:
        """The fields of ``value`` under this generator's layout and epoch."""
        return decode(value, layout=self.layout, epoch_ms=self.epoch_ms)

    def close(self) -> None:
        """Stop issuing ids (``next_id`` raises :class:`~distkit.errors.GeneratorClosedError` from now on, also
        in children forked later) and release the worker-id lease, if any, persisting the exact last timestamp.

        A static generator returns once its clock has passed its last timestamp (at most ``max_ahead_ms``
        + 1 ms), so a process that closes and exits never overlaps the next one on the same worker id."""
        lease = self._lease
        if lease is not None:
            lease._deactivate()  # no heartbeat raises the limit from now on
        with self._lock:
            was_open = self._blocked != _CLOSED
            self._block(_CLOSED)
            last = self._last
        if lease is not None:
            lease.close(last + self.epoch_ms if last >= 0 and was_open else None)
        elif was_open and last >= 0 and last - self._now() <= self._ahead + 1:
            end = time.monotonic() + (self._ahead + 100) / 1000  # bounded: a frozen custom clock never passes
            while time.monotonic() < end:
                behind = last + 1 - self._now()
                if behind <= 0:
                    break
                if self._clock is not None or behind > 1:
                    self._sleep(behind / 1000)  # else spin: sleeping would overshoot the millisecond

    def __enter__(self: G) -> G:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------------
    def _now(self) -> int:
        raw = self._clock() if self._clock is not None else _time_ns() // 1_000_000
        return raw - self.epoch_ms

    def _block(self, why: str) -> None:
        """Stop both inline paths (called with the lock held, or from a lock-free lease callback)."""
        if self._blocked == _CLOSED:
            return
        self._blocked = why
        self._limit = -1
        self._fast_limit = -1
        self._done -= self._max_seq - self._seq  # the sequence numbers skipped here were never issued
        self._seq = self._max_seq  # the same-millisecond path falls through to _next_slow

    def _set_limit(self, limit_ts: int) -> None:
        """Raise the largest issuable timestamp (lease renewals; the layout's end for static generators)."""
        limit = min(limit_ts, self._max_ts)
        if limit > self._limit and (self._blocked is None or self._blocked == _UNBOUND):
            self._blocked = None
            self._limit = limit
            self._fast_limit = -1 if self._logical else limit

    def _lease_clock(self) -> int:
        """The timestamp (offset) this generator would use now, read without the lock (lease heartbeats)."""
        now = self._now()
        if self._logical:
            return self._vclock + max(0, now - self._last_clock)
        return now

    def _next_slow(self, now: int, want: int) -> tuple[int, int]:
        """Reserve up to ``want`` sequence numbers; returns ``(ts, first_seq)``, leaves ``_seq`` at the last and
        ``_base`` at ``ts``'s base. Called with the lock held."""
        if self._blocked is not None:
            self._unblock()  # raises, or re-leases a worker id in a forked child
            now = self._now()
        last = self._last
        if self._logical:
            now = self._logical_now(now)
        elif now < last:
            now = self._handle_rollback(now, last)
        if now > last:
            ts, first, end = now, 0, min(want, self._max_seq + 1) - 1
        elif self._seq < self._max_seq:  # same millisecond, sequence left
            ts, first, end = last, self._seq + 1, min(self._max_seq, self._seq + want)
        else:  # sequence used up in this millisecond
            ts = self._logical_next(last) if self._logical else self._wait_past(last)
            first, end = 0, min(want, self._max_seq + 1) - 1
        if ts > self._limit:  # every timestamp is compared with the limit after it was read
            self._beyond_limit(ts)
        if ts != last:
            self._done += self._seq + 1
        self._last, self._seq = ts, end
        self._base = (ts << self._ts_shift) | self._node
        return ts, first

    def _unblock(self) -> None:
        why = self._blocked
        if why == _CLOSED:
            raise GeneratorClosedError(
                f"this generator (worker_id={self.worker_id}) was closed; create a new one to issue more ids"
            )
        if why == _FORKED:
            raise ForkedGeneratorError(
                f"this generator (static worker_id={self.worker_id}) was created before os.fork(); using it in "
                "the child would duplicate the parent's ids. Create a new generator in the child, or use "
                "Snowflake.from_lease(...) which leases a new worker id after fork"
            )
        if why == _CHILD:
            self._relet_in_child()
            return
        if why == _CHILD_FAILED:
            raise ChildWorkerLeaseError(
                f"this forked child could not lease a worker id of its own ({self._child_error!r}); it issues no "
                "ids rather than share its parent's. Create a new generator from a new lease in the child"
            ) from self._child_error
        if self._lease is not None:
            self._lease.check()  # raises WorkerLeaseLostError
        raise WorkerLeaseLostError(f"this generator cannot issue ids ({why})")

    def _beyond_limit(self, ts: int) -> None:
        if ts > self._max_ts:
            self._exhausted()
        if self._lease is None:  # pragma: no cover - a static limit is the layout's end
            self._exhausted()
        else:
            self._lease.cover(self, ts)  # renews now, or raises WorkerLeaseLostError

    def _logical_now(self, now: int) -> int:
        if now > self._last_clock:
            self._vclock += now - self._last_clock
        self._last_clock = now
        return max(self._vclock, self._last)

    def _logical_next(self, last: int) -> int:
        """Advance one millisecond logically, waiting while that would be > max_ahead_ms ahead of time."""
        while True:
            gap = last + 1 - self._vclock - self._ahead
            if gap <= 0:
                return last + 1
            if self._clock is not None or gap > 1:
                self._sleep(gap / 1000)  # else spin: sleeping would overshoot the millisecond
            self._logical_now(self._now())

    def _handle_rollback(self, now: int, last: int) -> int:
        back = last - now
        if self.rollback is RollbackPolicy.WAIT and back <= self.max_rollback_wait_ms:
            _ROLLBACKS.add(1, {"generator": type(self).__name__.lower(), "action": "wait"})
            return self._wait_until(last, self.max_rollback_wait_ms)
        _ROLLBACKS.add(1, {"generator": type(self).__name__.lower(), "action": "raise"})
        raise self._rollback_error(back)

    def _rollback_error(self, back: int) -> ClockMovedBackwardsError:
        return ClockMovedBackwardsError(
            f"clock moved back {back} ms (> max_rollback_wait_ms={self.max_rollback_wait_ms}) "
            f"under RollbackPolicy.{self.rollback.name}; use RollbackPolicy.LOGICAL or Butterfly, or fix NTP "
            "(slew, don't step)",
            backwards_ms=back,
        )

    def _wait_past(self, last: int) -> int:
        cap = self.max_rollback_wait_ms if self.rollback is RollbackPolicy.WAIT else 0
        return self._wait_until(last + 1, cap + 1)

    def _wait_until(self, target: int, cap_ms: int) -> int:
        """Block until the clock reads >= ``target``: spin for the real clock (sub-ms), sleep for others.
        Re-checks after every sleep: if the clock stepped back so that more than ``cap_ms`` remain, raise."""
        while True:
            now = self._now()
            if now >= target:
                return now
            behind = target - now
            if behind > cap_ms:
                raise self._rollback_error(behind)
            if self._clock is None and behind <= 1:
                continue  # spin: sleeping would overshoot the millisecond
            self._sleep(behind / 1000)

    def _start_lease(self) -> None:
        """Resume above the leased worker id's mark, then let the lease enable issuing (lock not needed:
        the generator is blocked until the lease's first renewal)."""
        lease = self._lease
        assert lease is not None
        mark = lease.high_water_ms - self.epoch_ms if lease.high_water_ms > 0 else -1
        wait_to = -1
        if mark > self._last:
            if self._logical:
                self._vclock = max(self._vclock, mark)  # continue logically above the mark
            else:
                behind = mark - self._now()
                limit = max(self.max_rollback_wait_ms, lease.ttl_ms)
                if behind > limit:
                    raise ClockMovedBackwardsError(
                        f"clock is {behind} ms behind this worker id's persisted high-water mark; refusing to "
                        "issue ids that could repeat. Fix the clock or use Butterfly / RollbackPolicy.LOGICAL",
                        backwards_ms=behind,
                    )
                wait_to = mark
            self._done -= self._max_seq - self._seq  # skipped, not issued
            self._last, self._seq = mark, self._max_seq  # the next id goes to a later millisecond
            self._base = (mark << self._ts_shift) | self._node
        lease.bind(self)  # waits out a lost mark set, first renewal (sets the limit), heartbeat thread
        if wait_to >= 0:
            self._wait_until(wait_to, max(self.max_rollback_wait_ms, lease.ttl_ms))

    def _relet_in_child(self) -> None:
        lease = self._lease
        assert lease is not None
        try:
            lease.acquire()
            node = lease.worker_id
            if lease._split_node:
                self.datacenter_id = node >> self.layout.worker_bits
                node &= self.layout.max_worker_id
            self.worker_id = node
            self._node = (self.datacenter_id << self.layout.datacenter_shift) | (node << self.layout.worker_shift)
            self._blocked = _UNBOUND
            self._start_lease()
        except BaseException as exc:
            self._child_error = exc
            self._blocked = None
            self._block(_CHILD_FAILED)
            lease.close()
            raise ChildWorkerLeaseError(
                f"this forked child could not lease a worker id of its own ({exc!r}); it issues no ids rather "
                "than share its parent's. Create a new generator from a new lease in the child"
            ) from exc

    def _exhausted(self) -> None:
        raise TimestampExhaustedError(
            f"the {self.layout.timestamp_bits}-bit timestamp field ran out at "
            f"{self.exhausts_at.isoformat()} (epoch_ms={self.epoch_ms}); choose a "
            "later epoch or a wider timestamp field"
        )

    def _lease_lost(self) -> None:
        """Called by the lease (any thread, no lock): stop issuing at once."""
        if self._blocked is None or self._blocked == _UNBOUND:
            _LEASE_LOSSES.add(1, {"generator": type(self).__name__.lower()})
            self._block(_LOST)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        if self._blocked in (_CLOSED, _CHILD_FAILED, _FORKED):
            return  # a closed generator stays closed
        if self._lease is None:
            self._block(_FORKED)
        else:
            self._block(_CHILD)


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

    default_layout = SNOWFLAKE

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
        max_ahead_ms: int | None = None,
        lease: WorkerLease | None = None,
    ) -> None:
        super().__init__(
            worker_id=worker_id,
            datacenter_id=datacenter_id,
            epoch_ms=epoch_ms,
            layout=SNOWFLAKE if layout is None else layout,
            rollback=rollback,
            max_rollback_wait_ms=max_rollback_wait_ms,
            max_ahead_ms=max_ahead_ms,
            clock=clock,
            lease=lease,
        )


class Butterfly(IdGenerator):
    """Butterfly-style ids: 41-bit timestamp, 13-bit worker, 9-bit sequence; a backwards clock never stops it.

    It continues from its own last timestamp after any rollback and advances logically when the sequence
    wraps. Leased, bursts may run up to ``max_ahead_ms`` (default 2000, at most half the lease ttl) ahead of
    time; static, it waits for the next millisecond instead, unless ``max_ahead_ms`` is given (then it waits
    ``max_ahead_ms`` once at start, see docs/idgen.md).
    """

    default_layout = BUTTERFLY

    def __init__(
        self,
        worker_id: int,
        epoch_ms: int = DEFAULT_EPOCH_MS,
        layout: Layout | None = None,
        max_ahead_ms: int | None = None,
        clock: Clock | None = None,
        *,
        datacenter_id: int = 0,
        lease: WorkerLease | None = None,
    ) -> None:
        super().__init__(
            worker_id=worker_id,
            datacenter_id=datacenter_id,
            epoch_ms=epoch_ms,
            layout=BUTTERFLY if layout is None else layout,
            rollback=RollbackPolicy.LOGICAL,
            max_rollback_wait_ms=0,
            max_ahead_ms=max_ahead_ms,
            clock=clock,
            lease=lease,
        )

