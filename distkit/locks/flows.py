"""The lock operations, written once as sans-I/O flows (see :mod:`distkit.locks.ops`).

Sync and asyncio classes only choose how to run them. Everything that decides something lives here: how to
read a script's reply, how long to wait before re-checking, which deadline each call gets, what a
``release`` reply means for a hold that may have been retried after a network error, and what to undo when
an acquire is abandoned.

Deadlines: an ``acquire(timeout=t)`` gives every call it makes the deadline ``start + t`` (the first
attempt at least :data:`MIN_CALL_S`), so it returns or raises within ``t`` and a little; calls without a timeout
of their own (a try-lock, ``release``, state queries) get ``now + call_timeout_s``; cleanup after a failed
or cancelled acquire gets at most :data:`CLEANUP_S` beyond the acquire's deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from distkit import _metrics
from distkit.errors import (
    BackendUnavailableError,
    InvalidArgumentError,
    LockConfigConflictError,
    LockError,
    LockLostError,
    LockNotOwnedError,
    LocksClosedError,
    LockUpgradeError,
)
from distkit.locks.holds import Hold, HoldTable
from distkit.locks.ops import Call, Flow, Sleep, Subscribe, Unsubscribe, Wait, Waiter
from distkit.locks.specs import (
    ALREADY_DONE,
    BUSY,
    CONFLICT,
    DECREMENTED,
    FREED,
    GONE,
    NOT_HELD,
    OTHER,
    PARTIAL,
    TOO_MANY,
    UPGRADE,
    Spec,
    parse_pair,
)

MIN_CALL_S = 0.1  # the shortest deadline one attempt gets (acquire(timeout=0) still makes one real attempt)
CLEANUP_S = 0.1  # how far past the acquire's deadline its cleanup (undo, leave the queue) may run
MAX_LEASE_MS = 10**12  # ~31 years: Redis refuses expiries that overflow, and nobody means more
# what an outage looks like (the Runner raises BackendUnavailableError; its stub still raises redis-py's own)
OUTAGES = (BackendUnavailableError, RedisConnectionError, RedisTimeoutError, OSError)


KIND_NAMES = {"x": "lock", "r": "read", "w": "write", "s": "semaphore"}
_ACQUISITIONS = _metrics.counter("distkit.locks.acquisitions", "1", "acquire() calls by kind and outcome")
_WAIT = _metrics.histogram("distkit.locks.wait.duration", "s", "time from acquire() to the grant (or giving up)")
_ATTRS = {(k, o): {"kind": v, "outcome": o} for k, v in KIND_NAMES.items() for o in ("acquired", "busy", "timeout")}


def _count_acquire(kind: str, outcome: str, start: float) -> None:
    """One finished acquire: counted, and its wait recorded (only when a meter provider is installed)."""
    if _metrics.enabled():
        attrs = _ATTRS.get((kind, outcome)) or {"kind": kind, "outcome": outcome}
        _ACQUISITIONS.add(1, attrs)
        _WAIT.record(time.monotonic() - start, attrs)


@dataclass(frozen=True, slots=True)
class Context:
    """Per ``Locks``: its hold table, its watchdog lease, how to hand a hold to its watchdog, how to report a
    lost hold (``on_lost`` runs elsewhere, never on the caller's or the watchdog's path), whether the
    factory is closed and the default deadline of a single call."""

    table: HoldTable
    default_lease_ms: int
    on_watchdog: Callable[[Hold], None]
    alive: Callable[[], Callable[[], bool]]
    on_lost: Callable[[Hold], None] = lambda hold: None
    closed: Callable[[], bool] = lambda: False
    call_timeout_s: float = 5.0


def check_acquire_args(blocking: bool, timeout: float | None, lease_ms: int | None) -> None:
    if not isinstance(blocking, bool):
        raise InvalidArgumentError(f"blocking must be True or False, got {blocking!r}")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not timeout >= 0
        or math.isnan(timeout)
        or math.isinf(timeout)
    ):
        raise InvalidArgumentError(f"timeout must be >= 0 seconds or None (wait forever), got {timeout!r}")
    if timeout is not None and not blocking:
        raise InvalidArgumentError("timeout needs blocking=True; use blocking=False alone for a single try")
    check_lease_ms(lease_ms)


def check_lease_ms(lease_ms: int | None) -> None:
    if lease_ms is not None and (
        isinstance(lease_ms, bool) or not isinstance(lease_ms, int) or not 0 < lease_ms <= MAX_LEASE_MS
    ):
        raise InvalidArgumentError(
            f"lease_ms must be a positive int of milliseconds up to {MAX_LEASE_MS} (or None for the watchdog), "
            f"got {lease_ms!r}"
        )


def lease_of(lease_ms: int | None, lease_s: float | None) -> int | None:
    """One lease from ``lease_ms`` or ``lease_s`` (never both): milliseconds, or None for the watchdog."""
    if lease_s is None:
        check_lease_ms(lease_ms)
        return lease_ms
    if lease_ms is not None:
        raise InvalidArgumentError(f"pass lease_ms or lease_s, not both (got {lease_ms!r} ms and {lease_s!r} s)")
    if isinstance(lease_s, bool) or not isinstance(lease_s, int | float) or not 0 < lease_s <= MAX_LEASE_MS / 1000:
        raise InvalidArgumentError(f"lease_s must be a positive number of seconds, got {lease_s!r}")
    return max(1, round(lease_s * 1000))


def wait_seconds(hint_ms: int, cap_s: float, fallback_s: float, deadline: float | None) -> float | None:
    """How long to block before re-checking, or None when the deadline has passed.

    ``hint_ms`` is the script's estimate (the holder's remaining lease): a missed wake-up message therefore
    costs at most one lease, never a hang. ``cap_s`` bounds waits that must refresh a queue place.
    """
    wait = (hint_ms + 1) / 1000 if hint_ms >= 0 else fallback_s
    wait = min(wait, cap_s)
    if deadline is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        wait = min(wait, remaining)
    return max(wait, 0.0005)


def _closed_error(spec: Spec) -> LocksClosedError:
    return LocksClosedError(f"{spec.name!r}: the Locks factory was closed while acquiring; create a new one")


def acquire(
    ctx: Context,
    spec: Spec,
    holder: str,
    alive: Callable[[], bool],
    view: Any,
    *,
    blocking: bool,
    timeout: float | None,
    lease_ms: int | None,
    units: int = 1,
) -> Flow[bool]:
    """Take one hold (or one more, reentrantly); True when acquired, False when not within ``timeout``.

    ``holder`` and ``alive`` are the caller's, taken when the call was made (not when the flow runs: under
    ``asyncio.wait_for`` on Python < 3.12 the flow runs in a task of its own)."""
    if timeout is not None or lease_ms is not None or blocking is not True:
        check_acquire_args(blocking, timeout, lease_ms)
    if ctx.closed():
        raise _closed_error(spec)
    table = ctx.table
    hold = table.get(spec.hold_key, holder)
    if hold is not None and hold.lost:
        raise LockLostError(f"{spec.name!r} was lost while held (lease expired or key deleted); release() it first")
    if hold is None and spec.upgrade_from and table.get(spec.upgrade_from, holder) is not None:
        raise LockUpgradeError(
            f"{spec.name!r}: this owner holds the read lock; release it before asking for the write lock "
            "(upgrading could deadlock), or take the write lock first and then the read lock (downgrade)"
        )
    pending = (spec.hold_key, holder)
    if pending in table.acquiring:
        raise LockError(
            f"{spec.name!r}: this owner is already acquiring it (two acquire() calls of one task run concurrently, "
            "e.g. under asyncio.gather); await one before starting the next"
        )
    table.acquiring.add(pending)
    try:
        expected = hold.count if hold else 0
        lease = ctx.default_lease_ms if lease_ms is None else lease_ms
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        waiter: Waiter | None = None
        in_flight = acquired = False
        failing_since: float | None = None
        backoff = 0.02
        try:
            while True:
                if waiter is not None:
                    waiter.signal.clear()
                in_flight, sent = True, time.monotonic()
                if deadline is None:
                    call_deadline = sent + ctx.call_timeout_s
                else:  # a retry after an outage gets no extension: the acquire's own deadline bounds it
                    call_deadline = max(deadline, sent + MIN_CALL_S) if failing_since is None else deadline
                try:
                    reply = yield spec.acquire_call(holder, expected, lease, blocking, call_deadline, units)
                except OUTAGES:
                    # A blocked acquire rides out a short outage (a restart, a failover) until its deadline, or for
                    # call_timeout_s without one; retrying is safe: the script recognises an attempt that already ran.
                    now = time.monotonic()
                    failing_since = now if failing_since is None else failing_since
                    give_up = failing_since + ctx.call_timeout_s if deadline is None else deadline
                    if not blocking or now + backoff >= give_up or ctx.closed():
                        raise
                    yield Sleep(backoff)
                    backoff = min(backoff * 2, 0.5)
                    continue
                in_flight, failing_since, backoff = False, None, 0.02
                if isinstance(reply, bytes | str):  # the fencing token: acquired
                    acquired = True
                    if ctx.closed():
                        break
                    if hold is not None:
                        hold.count += 1
                        hold.leased(sent, lease)
                        if lease_ms is None and not hold.watchdog:  # re-entered without a lease: renew from now on
                            hold.lease_ms = lease
                            hold.watchdog = True
                            ctx.on_watchdog(hold)
                    else:
                        token = reply.encode() if isinstance(reply, str) else reply
                        hold = Hold(spec, holder, alive, token, 1, lease, lease_ms is None, 0.0, 0.0, view, units=units)
                        hold.leased(sent, lease)
                        table.add(hold)
                        if hold.watchdog:
                            ctx.on_watchdog(hold)
                    break
                status, value = parse_pair(reply)
                _raise_for_status(ctx, status, value, spec, hold, units)
                if not blocking:
                    _count_acquire(spec.kind, "busy", start)
                    return False
                if ctx.closed():
                    raise _closed_error(spec)
                seconds = wait_seconds(value, spec.recheck_cap_s, ctx.default_lease_ms / 1000, deadline)
                if seconds is None:
                    break
                if waiter is None:
                    waiter = yield Subscribe(spec.channel, holder, deadline)
                    continue  # re-check at once: a release may have happened before the subscription
                yield Wait(waiter, seconds)
        except GeneratorExit:
            raise
        except BaseException:
            yield from _abandon(spec, holder, expected, waiter, in_flight, deadline)
            raise
        if acquired and ctx.closed():  # granted while close() ran: nobody would renew it
            yield from _give_back_reply(spec, holder, reply, expected, hold, table, deadline)
            if waiter is not None:
                yield Unsubscribe(waiter)
            raise _closed_error(spec)
        if waiter is not None:
            try:
                if not acquired:
                    yield from _quietly(spec.leave_call(holder, _cleanup_deadline(deadline)))
                yield Unsubscribe(waiter)
            except GeneratorExit:
                raise
            except BaseException:  # cancelled after the grant: the caller will not know it holds the lock
                if acquired:
                    yield from _give_back(table, spec, holder, deadline)
                raise
        _count_acquire(spec.kind, "acquired" if acquired else "timeout", start)
        return acquired
    finally:
        table.acquiring.discard(pending)


def _cleanup_deadline(deadline: float | None) -> float:
    now = time.monotonic()
    return now + CLEANUP_S if deadline is None or deadline < now else deadline + CLEANUP_S


def _give_back_reply(
    spec: Spec, holder: str, reply: Any, expected: int, hold: Hold | None, table: HoldTable, deadline: float | None
) -> Flow[None]:
    """Undo a grant that arrived after ``close()``: the new hold was never registered."""
    token = reply.encode() if isinstance(reply, str) else reply
    yield from _quietly(spec.release_call(holder, token, expected + 1, _cleanup_deadline(deadline)))


def _give_back(table: HoldTable, spec: Spec, holder: str, deadline: float | None = None) -> Flow[None]:
    """Release the hold just granted to an acquire that is being cancelled (best effort: else it expires)."""
    hold = table.get(spec.hold_key, holder)
    if hold is None:
        return
    started = time.monotonic()
    try:
        reply = yield spec.release_call(holder, hold.token, hold.count, _cleanup_deadline(deadline))
        settle_release(table, hold, reply, started)
    except Exception:
        return


def _raise_for_status(ctx: Context, status: int, value: Any, spec: Spec, hold: Hold | None, units: int) -> None:
    if status == BUSY:
        return
    if status == UPGRADE:
        raise LockUpgradeError(
            f"{spec.name!r}: this owner holds the read lock; release it before asking for the write lock"
        )
    if status == GONE and hold is not None:
        if ctx.table.mark_lost(hold):
            ctx.on_lost(hold)
        raise LockLostError(f"{spec.name!r} was lost while held (lease expired or key deleted); release() it first")
    if status == CONFLICT:
        raise LockConfigConflictError(
            f"{spec.name!r} is configured as {value!r} in Redis, this object as {getattr(spec, 'config', '?')!r}: "
            "use the same permits / prefer_writers (and the same kind of object) for one name everywhere"
        )
    if status == TOO_MANY:
        raise InvalidArgumentError(f"{spec.name!r}: asked for {units} permits, the semaphore has only {value}")
    raise LockError(f"{spec.name!r}: Redis has hold count {value}, this process expected another (status {status})")


def _quietly(call: Call | None) -> Flow[None]:
    """Best-effort cleanup: a failure here only leaves an entry that expires on its own."""
    if call is None:
        return
    try:
        yield call
    except Exception:
        return


def _abandon(
    spec: Spec, holder: str, expected: int, waiter: Waiter | None, in_flight: bool, deadline: float | None
) -> Flow[None]:
    """Leave nothing behind when an acquire is cancelled or fails: undo an attempt whose reply never came
    (it may have taken the lock), drop the queue place, unsubscribe. Bounded by :data:`CLEANUP_S` past the
    acquire's deadline: if Redis is unreachable, what is left expires on its lease."""
    if in_flight:
        yield from _quietly(spec.release_call(holder, "", expected + 1, _cleanup_deadline(deadline)))
    if waiter is not None:
        yield from _quietly(spec.leave_call(holder, _cleanup_deadline(deadline)))
        yield Unsubscribe(waiter)


def release(
    ctx: Context, spec: Spec, holder: str, what: str = "lock", *, quiet: bool = False, units: int = 0
) -> Flow[bool]:
    """Release one hold (``units`` > 0: give back that many permits of a semaphore hold); retried calls are
    idempotent (see :func:`settle_release`). ``quiet``: answer False instead of raising ``LockNotOwnedError``
    / ``LockLostError`` (``try_release``)."""
    table = ctx.table
    hold = table.get(spec.hold_key, holder)
    if hold is None:
        if quiet:
            return False
        raise LockNotOwnedError(
            f"{spec.name!r} ({what}) is not held by the caller; only the thread or task that acquired it may release it"
        )
    if hold.lost:  # already reported: drop it here, without Redis (which may be the reason it was lost)
        table.remove(hold)
        hold.count = 0
        if quiet:
            return False
        raise LockLostError(f"{spec.name!r} was lost while held (lease expired or key deleted); the hold is dropped")
    if hold.release_started is None:
        hold.release_started = time.monotonic()
    hold.releasing = True
    believed = hold.units if units else None
    sent = time.monotonic()
    try:
        reply = yield spec.release_call(
            holder, hold.token, hold.count, time.monotonic() + ctx.call_timeout_s, units, believed
        )
    finally:
        hold.releasing = False
    try:
        settle_release(table, hold, reply, hold.release_started, units, sent)
    except LockLostError:
        if table.mark_lost(hold):
            ctx.on_lost(hold)
        if quiet:
            return False
        raise
    return True


def settle_release(
    table: HoldTable, hold: Hold, reply: Any, started: float, units: int = 0, sent: float | None = None
) -> None:
    """Apply a release reply to the local hold.

    ``ALREADY_DONE``: an earlier, retried call got through. ``NOT_HELD`` on a last hold whose lease was
    still certainly valid when ``release()`` started means the same thing (the earlier call freed it, its
    reply was lost): no error, as the critical section was protected to the end. Another owner holding the
    lock is the same only if it took the lock after this release started (its token is the server clock at its
    acquisition); if it took it before, the caller's critical section was not exclusive: ``LockLostError``.
    """
    name = hold.spec.name
    if isinstance(reply, list | tuple):  # {OTHER, their token, server now}: another owner holds it
        # The server clock when this release began is at most ``server_now - (sent - started)``: the script ran
        # after this attempt was sent. A first attempt gives exactly ``server_now``, so any other owner took the
        # lock before it: lost. A retry after an outage leaves the window since the first attempt (whose reply
        # may have been lost after it freed the lock) to the benefit of the doubt.
        other_token, server_now = int(reply[1]), int(reply[2])
        since_first_s = (started if sent is None else sent) - started
        started_on_server = server_now - since_first_s * 1e6 * 0.999
        if int(reply[0]) == OTHER and hold.count == 1 and not hold.lost and other_token >= started_on_server:
            reply = NOT_HELD  # taken after our release began: our earlier, retried release freed it
        else:
            _drop(table, hold)
            raise LockLostError(
                f"{name!r} is held by another owner who took it before this release: the lock was lost while held "
                "(lease expired or key deleted), so the critical section may not have been exclusive; use a "
                "longer lease, the watchdog (lease_ms=None) or fencing tokens"
            )
    reply = int(reply)
    if reply == PARTIAL:
        hold.units -= units
        hold.release_started = None
        return
    if reply in (FREED, DECREMENTED, ALREADY_DONE) or (
        reply == NOT_HELD and hold.count == 1 and not hold.lost and started <= hold.valid_until
    ):
        hold.release_started = None
        if units and reply == ALREADY_DONE and 0 < units < hold.units:
            hold.units -= units
            return
        hold.count -= 1
        if hold.count == 0:
            table.remove(hold)
        return
    if reply == NOT_HELD:
        _drop(table, hold)
        raise LockLostError(
            f"{name!r} was no longer held when released (lease expired or key deleted): the critical section "
            "may not have been exclusive; use a longer lease, the watchdog (lease_ms=None) or fencing tokens"
        )
    raise LockError(f"{name!r}: Redis disagrees with this process about the hold count (release reply {reply})")


def _drop(table: HoldTable, hold: Hold) -> None:
    """A lost hold is gone for good: every reentrant level with it (the next acquire starts afresh)."""
    hold.count = 0
    table.remove(hold)


def extend(ctx: Context, spec: Spec, holder: str, lease_ms: int) -> Flow[None]:
    """Set the caller's hold to expire ``lease_ms`` from now (a watchdog hold is then renewed with that lease)."""
    check_lease_ms(lease_ms)
    hold = ctx.table.get(spec.hold_key, holder)
    if hold is None:
        raise LockNotOwnedError(f"{spec.name!r} is not held by the caller: nothing to extend")
    if hold.lost:
        raise LockLostError(f"{spec.name!r} was lost while held; release() it and acquire it again")
    sent = time.monotonic()
    reply = yield spec.renew_call(holder, hold.token, lease_ms, sent + ctx.call_timeout_s)
    if int(reply) != 1:
        if ctx.table.mark_lost(hold):
            ctx.on_lost(hold)
        raise LockLostError(f"{spec.name!r} was lost while held (lease expired or key deleted): not extended")
    hold.lease_ms = lease_ms
    hold.valid_until = 0.0
    hold.leased(sent, lease_ms)
