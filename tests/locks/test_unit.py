"""Pure decisions (no I/O) of distkit.locks, plus Hypothesis invariants (one against real Redis)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distkit.errors import LockError, LockLostError
from distkit.locks import Locks, flows
from distkit.locks.holds import Hold, HoldTable
from distkit.locks.ops import Call, Subscribe, Unsubscribe, Wait, Waiter, adrive, drive
from distkit.locks.specs import (
    ALREADY_DONE,
    DECREMENTED,
    FREED,
    LEAVE,
    LOCK_ACQUIRE,
    LOCK_RELEASE,
    NOT_HELD,
    ExclusiveSpec,
)
from distkit.locks.waiters import Hub, SubscriptionBook
from distkit.locks.watchdog import RenewalPlanner

SPEC = ExclusiveSpec("ns", "name")
FAIR = ExclusiveSpec("ns", "fair", waiter_ttl_ms=3_000)


def make_hold(count: int = 1, valid_for: float = 10.0, alive: bool = True, watchdog: bool = True) -> Hold:
    now = time.monotonic()
    return Hold(SPEC, "me", lambda: alive, b"17", count, 3_000, watchdog, now + valid_for, now, None)


# ------------------------------------------------------------------ waiting


def test_wait_seconds_uses_the_hint_caps_and_deadline() -> None:
    assert flows.wait_seconds(99, float("inf"), 30.0, None) == pytest.approx(0.1)
    assert flows.wait_seconds(-1, float("inf"), 30.0, None) == 30.0  # no TTL reported: one lease
    assert flows.wait_seconds(5_000, 1.0, 30.0, None) == 1.0  # a queue place must be refreshed
    assert flows.wait_seconds(5_000, 9.0, 30.0, time.monotonic() + 0.2) <= 0.2  # type: ignore[operator]
    assert flows.wait_seconds(5_000, 9.0, 30.0, time.monotonic() - 0.01) is None
    assert flows.wait_seconds(0, 9.0, 30.0, None) == 0.001


# ------------------------------------------------------------------ release decisions


@pytest.mark.parametrize("reply", [FREED, ALREADY_DONE])
def test_release_of_last_hold_forgets_it(reply: int) -> None:
    table, hold = HoldTable(), make_hold()
    table.add(hold)
    flows.settle_release(table, hold, reply, time.monotonic())
    assert len(table) == 0


def test_release_of_reentrant_hold_decrements() -> None:
    table, hold = HoldTable(), make_hold(count=3)
    table.add(hold)
    flows.settle_release(table, hold, DECREMENTED, time.monotonic())
    assert hold.count == 2 and len(table) == 1


def test_not_held_while_lease_valid_is_a_retried_release_that_got_through() -> None:
    table, hold = HoldTable(), make_hold()
    table.add(hold)
    flows.settle_release(table, hold, NOT_HELD, time.monotonic())
    assert len(table) == 0


@pytest.mark.parametrize(
    ("count", "valid_for", "lost"),
    [(1, -1.0, False), (1, 10.0, True), (2, 10.0, False)],
    ids=["expired", "lost", "reentrant"],
)
def test_not_held_otherwise_is_a_lost_lock(count: int, valid_for: float, lost: bool) -> None:
    table, hold = HoldTable(), make_hold(count=count, valid_for=valid_for)
    hold.lost = lost
    table.add(hold)
    with pytest.raises(LockLostError, match="no longer held"):
        flows.settle_release(table, hold, NOT_HELD, time.monotonic())
    assert hold.count == 0 and len(table) == 0, "a lost hold is dropped with every reentrant level"


def test_count_mismatch_is_reported() -> None:
    table, hold = HoldTable(), make_hold()
    table.add(hold)
    with pytest.raises(LockError, match="disagrees"):
        flows.settle_release(table, hold, -2, time.monotonic())


# ------------------------------------------------------------------ flows under failure


def _ctx() -> flows.Context:
    return flows.Context(HoldTable(), 3_000, lambda h: None, lambda: lambda: True)


def _scripted(replies: list[Any], fail_on: type, error: BaseException) -> tuple[list[Any], Any]:
    seen: list[Any] = []
    waiter = Waiter("ch", "me", threading.Event())

    def execute(op: Any) -> Any:
        seen.append(op)
        is_retry = isinstance(op, Call) and op.script is LOCK_ACQUIRE and len(seen) > 3
        if isinstance(op, fail_on) and (fail_on is not Call or is_retry):
            raise error
        if isinstance(op, Subscribe):
            return waiter
        if isinstance(op, Call):
            return replies.pop(0) if op.script is LOCK_ACQUIRE else 1
        return None

    return seen, execute


def test_interrupted_wait_leaves_the_queue_and_unsubscribes() -> None:
    seen, execute = _scripted([[0, 500], [0, 500]], Wait, KeyboardInterrupt())
    flow = flows.acquire(_ctx(), FAIR, "me", lambda: True, None, blocking=True, timeout=None, lease_ms=None)
    with pytest.raises(KeyboardInterrupt):
        drive(flow, execute)
    kinds = [type(op).__name__ if not isinstance(op, Call) else op.script.name for op in seen]
    assert kinds == ["locks/lock_acquire", "Subscribe", "locks/lock_acquire", "Wait", "locks/leave", "Unsubscribe"]


async def test_cancelled_attempt_in_flight_is_undone() -> None:
    seen, execute = _scripted([[0, 500], [0, 500]], Call, asyncio.CancelledError())

    async def aexecute(op: Any) -> Any:
        return execute(op)

    flow = flows.acquire(_ctx(), FAIR, "me", lambda: True, None, blocking=True, timeout=None, lease_ms=None)
    with pytest.raises(asyncio.CancelledError):
        await adrive(flow, aexecute)
    undo = [op for op in seen if isinstance(op, Call) and op.script is LOCK_RELEASE]
    assert len(undo) == 1 and undo[0].args == ("me", "", 1), "release with any token whatever the attempt took"
    assert isinstance(seen[-1], Unsubscribe)
    assert any(isinstance(op, Call) and op.script is LEAVE for op in seen)


def test_cancelled_right_after_the_grant_gives_the_lock_back() -> None:
    ctx, seen = _ctx(), []
    replies = [[0, 500], b"1795557461866913"]

    def execute(op: Any) -> Any:
        seen.append(op)
        if isinstance(op, Subscribe):
            return Waiter("ch", "me", threading.Event())
        if isinstance(op, Unsubscribe):
            raise asyncio.CancelledError
        return replies.pop(0) if op.script is LOCK_ACQUIRE else FREED

    flow = flows.acquire(ctx, SPEC, "me", lambda: True, None, blocking=True, timeout=None, lease_ms=None)
    with pytest.raises(asyncio.CancelledError):
        drive(flow, execute)
    give_back = seen[-1]
    assert isinstance(give_back, Call) and give_back.script is LOCK_RELEASE
    assert give_back.args == ("me", b"1795557461866913", 1)
    assert len(ctx.table) == 0, "the caller never learnt it held the lock, so it is not held"


# ------------------------------------------------------------------ pub/sub bookkeeping


def test_book_subscribes_once_per_channel_and_wakes_by_payload() -> None:
    book = SubscriptionBook()
    a, b = Waiter("ch", "a", threading.Event()), Waiter("ch", "b", threading.Event())
    ca, new_a = book.join(a, threading.Event)
    _, new_b = book.join(b, threading.Event)
    assert (new_a, new_b) == (True, False)
    book.dispatch([b"subscribe", b"ch", 1])
    assert ca.is_set()  # type: ignore[attr-defined]
    book.dispatch([b"message", b"ch", b"b"])  # the fair queue's head is b
    assert not a.signal.is_set() and b.signal.is_set()  # type: ignore[attr-defined]
    book.dispatch([b"message", b"ch", b""])
    assert a.signal.is_set()  # type: ignore[attr-defined]
    book.leave(a)
    book.leave(b)
    assert book.unused(3600) == [] and not book.idle, "kept a while for the next waiter"
    assert book.unused(0) == ["ch"] and book.idle


def test_book_confirms_subscriptions_in_send_order_and_resets() -> None:
    book = SubscriptionBook()
    w1, w2 = Waiter("c1", "x", threading.Event()), Waiter("c2", "y", threading.Event())
    c1, _ = book.join(w1, threading.Event)
    c2, _ = book.join(w2, threading.Event)
    book.dispatch([b"subscribe", b"c1", 1])
    assert c1.is_set() and not c2.is_set()  # type: ignore[attr-defined]
    assert sorted(book.reset()) == ["c1", "c2"]
    assert c2.is_set() and w1.signal.is_set() and w2.signal.is_set()  # type: ignore[attr-defined]


@given(st.lists(st.tuples(st.sampled_from(["join", "leave", "sweep"]), st.integers(0, 2), st.integers(0, 3))))
def test_book_subscription_follows_waiters(ops: list[tuple[str, int, int]]) -> None:
    """Invariants: SUBSCRIBE is sent only for a channel not subscribed yet; a channel with waiters is never
    dropped; a sweep drops exactly the channels without waiters; ``waiting`` counts the registered waiters."""
    book = SubscriptionBook()
    present: dict[tuple[int, int], Waiter] = {}
    subscribed: set[str] = set()
    for op, ch, who in ops:
        channel = f"c{ch}"
        with_waiters = {f"c{c}" for c, _ in present}
        if op == "join" and (ch, who) not in present:
            present[(ch, who)] = w = Waiter(channel, f"h{who}", threading.Event())
            _, send = book.join(w, threading.Event)
            assert send == (channel not in subscribed)
            subscribed.add(channel)
        elif op == "leave" and (ch, who) in present:
            book.leave(present.pop((ch, who)))
        elif op == "sweep":
            dropped = set(book.unused(0))
            assert dropped == subscribed - with_waiters
            subscribed -= dropped
        assert set(book.channels) == subscribed
        assert {f"c{c}" for c, _ in present} <= subscribed
        assert book.waiting == len(present)


def test_the_listener_holds_back_only_while_every_waiter_it_woke_rechecks() -> None:
    """After waking *every* blocked acquire the listener leaves them the GIL until one blocks again (it must
    then read on for it); with another waiter still blocked, or once a new one joins, it reads on at once."""
    hub = Hub(client=None, name="test-hub")
    a, b = Waiter("x", "a", threading.Event()), Waiter("y", "b", threading.Event())
    hub.book.join(a, threading.Event)
    hub.book.join(b, threading.Event)
    with hub._lock:
        assert hub._dispatch([b"message", b"x", b""]) is False  # b is still blocked: its message may be next
    assert a.signal.is_set() and not b.signal.is_set()  # type: ignore[attr-defined]
    hub.unsubscribe(b)
    with hub._lock:
        assert hub._dispatch([b"message", b"x", b""]) is True
    hub.unsubscribe(a)  # a took the lock and left: nobody needs the listener, it is not woken for that
    assert not hub._rechecked.is_set() and not hub._rechecking
    hub.book.join(a, threading.Event)
    with hub._lock:
        assert hub._dispatch([b"message", b"x", b""]) is True
    hub.wait(a, 0.001)  # a lost the race and blocks again: the listener must read on for it
    assert hub._rechecked.is_set() and not hub._rechecking
    c = Waiter("x", "c", threading.Event())
    hub.book.join(c, threading.Event)
    hub._rechecked.clear()
    with hub._lock:
        assert hub._dispatch([b"message", b"x", b""]) is True  # a and c woken
    hub.wait(a, 0.001)  # a blocks again while c still re-checks: a needs the listener now, not after c
    assert hub._rechecked.is_set() and hub._rechecking == {c}


# ------------------------------------------------------------------ watchdog planning


def test_planner_drops_dead_owners_and_renews_the_living() -> None:
    table = HoldTable()
    living, dead, leased = make_hold(), make_hold(alive=False), make_hold(watchdog=False)
    dead.holder, leased.holder = "dead", "leased"
    for h in (living, dead, leased):
        table.add(h)
    batch, _, lost = RenewalPlanner(table, 3_000).due(time.monotonic())
    assert lost == []
    assert [h for h, _ in batch[next(iter(batch))]] == [living]
    assert table.snapshot() == [living, leased], "a dead owner's hold is dropped, not renewed"


def test_planner_settles_outcomes() -> None:
    table, hold = HoldTable(), make_hold(valid_for=0.5)
    table.add(hold)
    planner = RenewalPlanner(table, 3_000)
    sent = time.monotonic()
    assert planner.settle(hold, 1, sent) is False and hold.valid_until > sent + 2.9
    assert planner.settle(hold, OSError("down"), sent) is False  # lease still valid: retry soon
    assert hold.next_renewal <= time.monotonic() + planner.retry_s
    hold.releasing = True
    assert planner.settle(hold, 0, sent) is False  # the owner's release got there first
    hold.releasing = False
    assert planner.settle(hold, 0, sent) is True and hold.lost
    assert planner.settle(hold, 0, sent) is False, "lost is reported once"
    other = make_hold(valid_for=-1)
    other.holder = "other"
    table.add(other)
    assert planner.settle(other, OSError("down"), sent) is True, "the lease ran out while Redis was unreachable"


# ------------------------------------------------------------------ reentrancy invariant against Redis


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["acquire", "release", "acquire-twice", "release-twice"]), max_size=25))
def test_local_count_matches_redis_under_retried_calls(redis_client: Any, ops: list[str]) -> None:
    """Whatever mix of acquires, releases and duplicated (retried) script calls: the local hold count equals
    the count in Redis, and the lock exists exactly while the count is positive."""
    namespace = f"t-hyp-{uuid.uuid4().hex[:8]}"
    with Locks(redis_client, namespace=namespace) as locks:
        lock = locks.lock("h")
        lock_key = f"{{{namespace}:h}}"
        for op in ops:
            held = lock.hold_count
            if op.startswith("acquire"):
                call = SPEC.__class__(namespace, "h").acquire_call(locks.holder(), held, 5_000, True)
                if op == "acquire-twice":
                    call.script(redis_client, call.keys, call.args)  # a first run whose reply was lost
                lock.acquire(lease_ms=5_000)
            elif held:
                hold = locks.holds.get(lock._spec.hold_key, locks.holder())
                assert hold is not None
                if op == "release-twice":
                    rel = lock._spec.release_call(locks.holder(), hold.token, hold.count)
                    rel.script(redis_client, rel.keys, rel.args)
                lock.release()
            value = redis_client.get(lock_key)
            count = int(value.split()[1]) if value else 0
            assert count == lock.hold_count
            assert bool(redis_client.exists(lock_key)) == (count > 0)
        while lock.hold_count:
            lock.release()
        assert not redis_client.exists(lock_key)


# ------------------------------------------------------------------ issue 13: pure decisions


def test_release_meeting_another_owner_is_lost_on_a_first_attempt_and_benign_after_a_retry() -> None:
    table, hold = HoldTable(), make_hold()
    table.add(hold)
    started = time.monotonic()
    server_now = 1_800_000_000_000_000
    # first attempt (sent == started): any other owner took the lock before this release ran
    with pytest.raises(LockLostError, match="another owner"):
        flows.settle_release(table, hold, [-3, str(server_now - 10), str(server_now)], started, sent=started)
    assert len(table) == 0
    hold = make_hold()
    table.add(hold)
    # a retry 0.5 s after the first attempt: an owner that took it 0.2 s ago came after our first attempt
    first = started - 0.5
    flows.settle_release(table, hold, [-3, str(server_now - 200_000), str(server_now)], first, sent=started)
    assert len(table) == 0, "taken as our earlier release having freed it"
    hold = make_hold()
    table.add(hold)
    with pytest.raises(LockLostError):  # ... but one that took it before the first attempt: lost
        flows.settle_release(table, hold, [-3, str(server_now - 900_000), str(server_now)], first, sent=started)


def test_planner_reports_a_lease_that_ran_out_unrenewed_once() -> None:
    table = HoldTable()
    expired, fresh = make_hold(valid_for=-0.01), make_hold(valid_for=10.0)
    fresh.holder = "fresh"
    table.add(expired)
    table.add(fresh)
    planner = RenewalPlanner(table, 3_000)
    lost, wake = planner.expired(time.monotonic())
    assert lost == [expired] and expired.lost and wake <= fresh.valid_until
    assert planner.expired(time.monotonic())[0] == [], "reported once"
    _, _, lost_again = planner.due(time.monotonic())
    assert lost_again == []
    assert RenewalPlanner.deadline([(fresh, None), (expired, None)]) == expired.valid_until


def test_lease_units_and_key_escaping() -> None:
    from distkit.errors import InvalidArgumentError
    from distkit.locks.specs import object_key

    assert flows.lease_of(None, 1.5) == 1_500 and flows.lease_of(250, None) == 250
    assert flows.lease_of(None, None) is None
    for bad in ((1, 1.0), (None, 0), (None, float("nan")), (10**20, None), (None, True)):
        with pytest.raises(InvalidArgumentError):
            flows.lease_of(*bad)  # type: ignore[arg-type]
    assert object_key("app", "order:42") == "{app:order:42}"
    assert object_key("a:b", "c") == "{a%3Ab:c}" != object_key("a", "b:c") == "{a:b:c}"
    assert object_key("a", "100%") == "{a:100%25}" != object_key("a", "100%25")


@given(st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=12),
       st.text(min_size=1, max_size=12))
def test_distinct_namespace_name_pairs_never_share_a_key(ns1: str, n1: str, ns2: str, n2: str) -> None:
    from distkit.locks.specs import object_key

    if (ns1, n1) != (ns2, n2):
        assert object_key(ns1, n1) != object_key(ns2, n2)
