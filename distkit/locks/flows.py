"""The lock operations, written once as sans-I/O flows (see :mod:`distkit.locks.ops`).

Sync and asyncio classes only choose how to run them. Everything that decides something lives here: how to
read a script's reply, how long to wait before re-checking, what a ``release`` reply means for a hold that may
have been retried after a network error, and what to undo when an acquire is abandoned.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distkit.errors import InvalidArgumentError, LockError, LockLostError, LockNotOwnedError, LockUpgradeError
from distkit.locks.holds import Hold, HoldTable
from distkit.locks.ops import Call, Flow, Subscribe, Unsubscribe, Wait, Waiter
from distkit.locks.specs import (
    ALREADY_DONE,
    BUSY,
    DECREMENTED,
    FREED,
    GONE,
    NOT_HELD,
    UPGRADE,
    Spec,
    parse_pair,
)


@dataclass(frozen=True, slots=True)
class Context:
    """Per ``Locks``: its hold table, its watchdog lease, how to hand a hold to its watchdog and how to get
    the caller's liveness check (thread or task)."""

    table: HoldTable
    default_lease_ms: int
    on_watchdog: Callable[[Hold], None]
    alive: Callable[[], Callable[[], bool]]


def check_acquire_args(blocking: bool, timeout: float | None, lease_ms: int | None) -> None:
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0 or math.isnan(timeout)
    ):
        raise InvalidArgumentError(f"timeout must be >= 0 seconds or None (wait forever), got {timeout!r}")
    if timeout is not None and not blocking:
        raise InvalidArgumentError("timeout needs blocking=True; use blocking=False alone for a single try")
    if lease_ms is not None and (isinstance(lease_ms, bool) or not isinstance(lease_ms, int) or lease_ms <= 0):
        raise InvalidArgumentError(f"lease_ms must be a positive int (ms) or None for the watchdog, got {lease_ms!r}")


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


def acquire(
    ctx: Context,
    spec: Spec,
    holder: str,
    view: Any,
    *,
    blocking: bool,
    timeout: float | None,
    lease_ms: int | None,
) -> Flow[bool]:
    """Take one hold (or one more, reentrantly); True when acquired, False when not within ``timeout``."""
    if timeout is not None or lease_ms is not None or blocking is not True:
        check_acquire_args(blocking, timeout, lease_ms)
    hold = ctx.table.get(spec.hold_key, holder)
    if hold is not None and hold.lost:
        raise LockLostError(f"{spec.name!r} was lost while held (lease expired or key deleted); release() it first")
    if hold is None and spec.upgrade_from and ctx.table.get(spec.upgrade_from, holder) is not None:
        raise LockUpgradeError(
            f"{spec.name!r}: this owner holds the read lock; release it before asking for the write lock "
            "(upgrading could deadlock), or take the write lock first and then the read lock (downgrade)"
        )
    expected = hold.count if hold else 0
    lease = ctx.default_lease_ms if lease_ms is None else lease_ms
    deadline = None if timeout is None else time.monotonic() + timeout
    call = spec.acquire_call(holder, expected, lease, blocking)
    waiter: Waiter | None = None
    in_flight = acquired = False
    try:
        while True:
            if waiter is not None:
                waiter.signal.clear()
            in_flight, sent = True, time.monotonic()
            reply = yield call
            in_flight = False
            if isinstance(reply, bytes | str):  # the fencing token: acquired
                acquired = True
                if hold is not None:
                    hold.count += 1
                    hold.leased(sent, lease)
                else:
                    token = reply.encode() if isinstance(reply, str) else reply
                    hold = Hold(spec, holder, ctx.alive(), token, 1, lease, lease_ms is None, 0.0, 0.0, view)
                    hold.leased(sent, lease)
                    ctx.table.add(hold)
                    if hold.watchdog:
                        ctx.on_watchdog(hold)
                break
            status, value = parse_pair(reply)
            _raise_for_status(status, value, spec, hold)
            if not blocking:
                return False
            seconds = wait_seconds(value, spec.recheck_cap_s, ctx.default_lease_ms / 1000, deadline)
            if seconds is None:
                break
            if waiter is None:
                waiter = yield Subscribe(spec.channel, holder)
                continue  # re-check at once: a release may have happened before the subscription
            yield Wait(waiter, seconds)
    except GeneratorExit:
        raise
    except BaseException:
        yield from _abandon(spec, holder, expected, waiter, in_flight)
        raise
    if waiter is not None:
        try:
            if not acquired:
                yield from _quietly(spec.leave_call(holder))
            yield Unsubscribe(waiter)
        except GeneratorExit:
            raise
        except BaseException:  # cancelled after the grant: the caller will not know it holds the lock
            if acquired:
                yield from _give_back(ctx.table, spec, holder)
            raise
    return acquired


def _give_back(table: HoldTable, spec: Spec, holder: str) -> Flow[None]:
    """Release the hold just granted to an acquire that is being cancelled (best effort: else it expires)."""
    hold = table.get(spec.hold_key, holder)
    if hold is None:
        return
    started = time.monotonic()
    try:
        reply = yield spec.release_call(holder, hold.token, hold.count)
        settle_release(table, hold, int(reply), started)
    except Exception:
        return


def _raise_for_status(status: int, value: int, spec: Spec, hold: Hold | None) -> None:
    if status == BUSY:
        return
    if status == UPGRADE:
        raise LockUpgradeError(
            f"{spec.name!r}: this owner holds the read lock; release it before asking for the write lock"
        )
    if status == GONE and hold is not None:
        hold.lost = True
        raise LockLostError(f"{spec.name!r} was lost while held (lease expired or key deleted); release() it first")
    raise LockError(f"{spec.name!r}: Redis has hold count {value}, this process expected another (status {status})")


def _quietly(call: Call | None) -> Flow[None]:
    """Best-effort cleanup: a failure here only leaves an entry that expires on its own."""
    if call is None:
        return
    try:
        yield call
    except Exception:
        return


def _abandon(spec: Spec, holder: str, expected: int, waiter: Waiter | None, in_flight: bool) -> Flow[None]:
    """Leave nothing behind when an acquire is cancelled or fails: undo an attempt whose reply never came
    (it may have taken the lock), drop the queue place, unsubscribe."""
    if in_flight:
        yield from _quietly(spec.release_call(holder, "", expected + 1))
    if waiter is not None:
        yield from _quietly(spec.leave_call(holder))
        yield Unsubscribe(waiter)


def release(table: HoldTable, spec: Spec, holder: str, what: str = "lock") -> Flow[None]:
    """Release one hold. Retried calls are idempotent (see :func:`settle_release`)."""
    hold = table.get(spec.hold_key, holder)
    if hold is None:
        raise LockNotOwnedError(
            f"{spec.name!r} ({what}) is not held by the caller; only the thread or task that acquired it may release it"
        )
    started = time.monotonic()
    hold.releasing = True
    try:
        reply = yield spec.release_call(holder, hold.token, hold.count)
    finally:
        hold.releasing = False
    settle_release(table, hold, int(reply), started)


def settle_release(table: HoldTable, hold: Hold, reply: int, started: float) -> None:
    """Apply a release reply to the local hold.

    ``ALREADY_DONE``: an earlier, retried call got through. ``NOT_HELD`` on a last hold whose lease was
    still certainly valid when ``release()`` started means the same thing (the earlier call freed it, its
    reply was lost): no error, as the critical section was protected to the end. Otherwise the lock had
    already been lost, which the caller must hear about.
    """
    name = hold.spec.name
    if reply in (FREED, DECREMENTED, ALREADY_DONE) or (
        reply == NOT_HELD and hold.count == 1 and not hold.lost and started <= hold.valid_until
    ):
        hold.count -= 1
        if hold.count == 0:
            table.remove(hold)
        return
    if reply == NOT_HELD:
        hold.count -= 1
        hold.lost = True
        if hold.count == 0:
            table.remove(hold)
        raise LockLostError(
            f"{name!r} was no longer held when released (lease expired or key deleted): the critical section "
            "may not have been exclusive; use a longer lease, the watchdog (lease_ms=None) or fencing tokens"
        )
    raise LockError(f"{name!r}: Redis disagrees with this process about the hold count (release reply {reply})")
