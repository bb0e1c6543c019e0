"""@idempotent against the real Redis and PostgreSQL from ``make test`` (one suite, both stores)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections import Counter
from decimal import Decimal

import pytest
import redis

from distkit.errors import (
    IdempotencyClaimLostError,
    IdempotencyInProgressError,
    IdempotencyKeyMismatchError,
    IdempotencyStoreError,
)
from distkit.idempotency import RedisIdempotencyStore, idempotent
from tests.idempotency._workers import deliver
from tests.idempotency.conftest import SERVER_STORES

RESULTS = [
    0,
    None,
    "",
    [],
    {},
    False,
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    dt.datetime(2026, 11, 24, 12, 30, tzinfo=dt.timezone.utc),
    Decimal("19.99"),
    b"\x00raw",
    {"id": uuid.UUID(int=7), "at": dt.date(2026, 1, 2), "tags": ("a", "b")},
]


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__ + repr(r)[:12])
def test_three_deliveries_run_once_and_return_identical_results(store, result):
    calls = []

    @idempotent(store, key="event_id")
    def handle(event_id: str):
        calls.append(event_id)
        return result

    key = f"evt-{uuid.uuid4().hex}"
    outs = [handle(key) for _ in range(3)]
    assert calls == [key]
    assert outs == [result, result, result]
    assert all(type(o) is type(result) for o in outs)


def test_key_paths_and_callables(store):
    class Msg:
        def __init__(self, eid, order_id):
            self.headers = {"event-id": eid}
            self.order_id = order_id
            self.value = {"order_id": order_id}

    ran = Counter()

    @idempotent(store, key=lambda msg: msg.headers["event-id"], payload=lambda msg: msg.value)
    def by_header(msg):
        ran["h"] += 1
        return msg.order_id

    @idempotent(store, key="order_id")  # an attribute of the single argument
    def by_attr(msg):
        ran["a"] += 1
        return msg.order_id

    eid = uuid.uuid4().hex
    assert by_header(Msg(eid, 1)) == by_header(Msg(eid, 1)) == 1
    assert by_attr(Msg("x", eid)) == by_attr(Msg("y", eid)) == eid
    assert ran == {"h": 1, "a": 1}
    with pytest.raises(IdempotencyKeyMismatchError, match="different payload"):
        by_header(Msg(eid, 2))


def test_handler_failure_stores_nothing_and_the_retry_runs(store):
    attempts = []

    @idempotent(store, key="k")
    def handle(k):
        attempts.append(k)
        if len(attempts) == 1:
            raise ConnectionError("payment gateway down")
        return "charged"

    key = uuid.uuid4().hex
    with pytest.raises(ConnectionError):
        handle(key)
    assert handle(key) == "charged" and handle(key) == "charged"
    assert len(attempts) == 2


def test_configured_failures_are_stored_and_replayed(store):
    class CardDeclined(Exception):
        pass

    ran = []

    @idempotent(store, key="k", store_exceptions=(CardDeclined,))
    def handle(k):
        ran.append(k)
        raise CardDeclined("insufficient funds")

    key = uuid.uuid4().hex
    for _ in range(3):
        with pytest.raises(CardDeclined, match="insufficient funds"):
            handle(key)
    assert len(ran) == 1


def test_duplicate_while_in_progress_raises_or_waits(store):
    started, release = threading.Event(), threading.Event()

    @idempotent(store, key="k", scope=__name__ + ".slow_scope")
    def slow(k):
        started.set()
        release.wait(10)
        return "done"

    @idempotent(store, key="k", wait_s=10, poll_s=0.01, scope=__name__ + ".slow_scope")
    def patient(k):
        raise AssertionError("must not run")

    key = uuid.uuid4().hex
    first = threading.Thread(target=slow, args=(key,))
    first.start()
    started.wait(5)
    with pytest.raises(IdempotencyInProgressError, match="being processed"):
        slow(key)
    threading.Timer(0.3, release.set).start()
    assert patient(key) == "done"  # waited for the first run's result
    first.join()


def test_records_expire_after_ttl(store, store_kind, request):
    @idempotent(store, key="k", ttl_s=30)
    def handle(k):
        return 1

    key = uuid.uuid4().hex
    handle(key)
    if store_kind.startswith("redis"):
        pttl = request.getfixturevalue("redis_client").pttl(
            store.record_key(f"{handle.__module__}.{handle.__qualname__}:{key}")
        )
        assert 25_000 < pttl <= 30_000
    else:
        from sqlalchemy import select

        with store.engine.connect() as c:
            row = c.execute(select(store.table).where(store.table.c.key.endswith(key))).one()
        assert 25_000 < row.expires_at_ms - time.time() * 1000 <= 30_000
        assert row.state == "C"


@pytest.mark.parametrize("store_kind", SERVER_STORES)
def test_sixteen_threads_and_sixteen_processes_run_the_handler_exactly_once(
    store_kind, store, redis_url, redis_client, database_url, pg_schema, namespace, tmp_path
):
    """16 threads of this process and 16 forked processes (each with its own client or engine) deliver the same
    message at once: exactly one run."""
    counter = f"{{{namespace}}}:runs"
    key = f"order-{uuid.uuid4().hex}"
    url = redis_url if store_kind.startswith("redis") else database_url
    schema = namespace if store_kind.startswith("redis") else pg_schema
    if store_kind.startswith("redis"):
        store = RedisIdempotencyStore(redis_client, prefix=f"idem-{namespace}")
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(17)  # 16 children + this test
    procs = [
        ctx.Process(
            target=deliver,
            args=(store_kind, url, schema, redis_url, counter, key, 0.3, 60, start, str(tmp_path / f"p{i}")),
        )
        for i in range(16)
    ]
    for p in procs:
        p.start()

    @idempotent(store, key="order_id", scope="charge")  # same scope as the child processes' handler
    def handle(order_id: str) -> dict:
        redis_client.incr(counter)
        time.sleep(0.3)
        return {"order": order_id, "charged": 100}

    outcomes: list[str] = []

    go = threading.Event()

    def thread_delivery() -> None:
        go.wait(30)
        try:
            outcomes.append("result" if handle(key) == {"order": key, "charged": 100} else "wrong")
        except IdempotencyInProgressError:
            outcomes.append("in_progress")

    threads = [threading.Thread(target=thread_delivery) for _ in range(16)]
    for t in threads:
        t.start()
    start.wait(60)  # the 16 children are ready: everyone delivers at once
    go.set()
    for t in threads:
        t.join(30)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    outcomes += [(tmp_path / f"p{i}").read_text() for i in range(16)]
    assert int(redis_client.get(counter)) == 1  # exactly one run among 32 concurrent deliveries
    assert len(outcomes) == 32 and set(outcomes) <= {"result", "in_progress"}
    assert outcomes.count("result") >= 1
    redis_client.delete(counter)


@pytest.mark.slow
@pytest.mark.parametrize("store_kind", SERVER_STORES)
def test_sigkilled_owner_blocks_until_in_progress_ttl_then_exactly_one_reclaims(
    store_kind, store, redis_url, redis_client, database_url, pg_schema, namespace, tmp_path
):
    counter = f"{{{namespace}}}:runs"
    key = f"order-{uuid.uuid4().hex}"
    url = redis_url if store_kind.startswith("redis") else database_url
    schema = namespace if store_kind.startswith("redis") else pg_schema
    ctx = multiprocessing.get_context("fork")  # fast start: the children build their own clients
    victim = ctx.Process(
        target=deliver, args=(store_kind, url, schema, redis_url, counter, key, 60, 6.0, None, str(tmp_path / "victim"))
    )
    victim.start()
    deadline = time.monotonic() + 30
    while not (tmp_path / "victim.started").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    killed_at = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()

    # within in_progress_ttl_s the dead owner's claim still holds: duplicates are refused
    early = ctx.Process(
        target=deliver, args=(store_kind, url, schema, redis_url, counter, key, 0, 6.0, None, str(tmp_path / "early"))
    )
    early.start()
    early.join(30)
    assert (tmp_path / "early").read_text() == "in_progress"
    assert time.monotonic() - killed_at < 6.0  # (the check ran inside in_progress_ttl_s)

    time.sleep(max(0.0, 6.3 - (time.monotonic() - killed_at)))
    start = ctx.Barrier(9)
    procs = [
        ctx.Process(
            target=deliver,
            args=(store_kind, url, schema, redis_url, counter, key, 0.5, 6.0, start, str(tmp_path / f"r{i}")),
        )
        for i in range(8)
    ]
    for p in procs:
        p.start()
    start.wait(60)  # all 8 redeliveries at once
    for p in procs:
        p.join(60)
    outcomes = [(tmp_path / f"r{i}").read_text() for i in range(8)]
    assert int(redis_client.get(counter)) == 2  # the killed run + exactly one reclaiming redelivery
    assert outcomes.count("result") >= 1 and set(outcomes) <= {"result", "in_progress"}
    redis_client.delete(counter)


def test_late_finisher_after_reclaim_does_not_overwrite(store):
    key = uuid.uuid4().hex
    gate = threading.Event()

    @idempotent(store, key="k", in_progress_ttl_s=0.3, scope="job")
    def slow(k):
        gate.wait(10)
        return "stale"

    @idempotent(store, key="k", in_progress_ttl_s=0.3, scope="job")
    def fresh(k):
        return "fresh"

    errors = []

    def run_slow():
        try:
            slow(key)
        except IdempotencyClaimLostError as exc:
            errors.append(exc)

    t = threading.Thread(target=run_slow)
    t.start()
    time.sleep(0.5)  # the slow run's claim is now stale
    assert fresh(key) == "fresh"  # reclaimed and completed
    gate.set()
    t.join()
    assert len(errors) == 1 and errors[0].result == "stale"
    assert fresh(key) == "fresh" and slow(key) == "fresh"  # the stored result is the new owner's


def test_redis_scripts_are_safe_to_resend(redis_client, namespace):
    """The direct lane resends a script once when a reused connection turns out dead; if the first send had run,
    the repeat by the same owner must answer the same."""
    store = RedisIdempotencyStore(redis_client, prefix=f"idem-{namespace}")
    k = uuid.uuid4().hex
    assert store.begin(k, "tok-1", "h", 60_000, 60_000).outcome.value == "claimed"
    assert store.begin(k, "tok-1", "h", 60_000, 60_000).outcome.value == "claimed"  # resent begin
    assert store.begin(k, "tok-2", "h", 60_000, 60_000).outcome.value == "in_progress"  # anyone else waits
    assert store.complete(k, "tok-1", b"result", 60_000) is True
    assert store.complete(k, "tok-1", b"result", 60_000) is True  # resent complete
    assert store.complete(k, "tok-2", b"other", 60_000) is False  # never the owner
    done = store.begin(k, "tok-3", "h", 60_000, 60_000)
    assert done.outcome.value == "completed" and done.result == b"result"
    k2 = uuid.uuid4().hex
    store.begin(k2, "tok-1", "h", 60_000, 60_000)
    assert store.release(k2, "tok-1") is True
    assert store.release(k2, "tok-1") is False  # resent release: already gone, nothing else touched
    assert store.begin(k2, "tok-4", "h", 60_000, 60_000).outcome.value == "claimed"


def test_store_unreachable_raises_by_default_or_runs_unguarded(private_redis):
    store = RedisIdempotencyStore(redis.Redis.from_url(private_redis.url, socket_timeout=0.5), prefix="idem")
    ran = []

    @idempotent(store, key="k")
    def strict(k):
        ran.append("strict")
        return 1

    @idempotent(store, key="k", on_store_error="run")
    def lenient(k):
        ran.append("lenient")
        return 2

    assert strict("a") == 1
    private_redis.stop()
    with pytest.raises(IdempotencyStoreError, match="did not run"):
        strict("b")
    assert lenient("c") == 2 and lenient("c") == 2  # unguarded: ran twice
    assert ran == ["strict", "lenient", "lenient"]


async def test_async_handlers_work_the_same(async_redis_client, namespace):
    store = RedisIdempotencyStore(async_redis_client, prefix=f"idem-{namespace}")
    calls = []

    @idempotent(store, key="k")
    async def handle(k):
        calls.append(k)
        return {"when": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), "n": 0}

    import asyncio

    key = uuid.uuid4().hex
    outs = await asyncio.gather(*[handle(key) for _ in range(1)])
    outs += [await handle(key), await handle(key)]
    assert calls == [key] and outs[0] == outs[1] == outs[2]


def _inherited_delivery(handle, key, start, out):  # runs in a forked child, with the parent's store object
    start.wait(30)
    try:
        outcome = "result" if handle(key) == {"order": key} else "wrong"
    except IdempotencyInProgressError:
        outcome = "in_progress"
    with open(out, "w") as f:
        f.write(outcome)


@pytest.mark.parametrize("store_kind", SERVER_STORES)
def test_a_store_used_before_fork_is_safe_in_the_children(store, redis_client, namespace, tmp_path):
    """The parent's store (its pooled connections or direct lane already used) goes into 6 forked children that race
    the parent: exactly one run, no crossed replies."""
    counter = f"{{{namespace}}}:fork-runs"

    @idempotent(store, key="order_id", scope="fork")
    def handle(order_id: str) -> dict:
        redis_client.incr(counter)
        time.sleep(0.2)
        return {"order": order_id}

    assert handle("warm-up") == {"order": "warm-up"}  # connections now pooled in the parent
    key = uuid.uuid4().hex
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(7)
    procs = [
        ctx.Process(target=_inherited_delivery, args=(handle, key, start, str(tmp_path / f"f{i}"))) for i in range(6)
    ]
    for p in procs:
        p.start()
    start.wait(30)
    try:
        mine = "result" if handle(key) == {"order": key} else "wrong"
    except IdempotencyInProgressError:
        mine = "in_progress"
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    outcomes = [mine] + [(tmp_path / f"f{i}").read_text() for i in range(6)]
    assert set(outcomes) <= {"result", "in_progress"} and "result" in outcomes
    assert int(redis_client.get(counter)) == 2  # the warm-up and exactly one of the 7 racers
    assert handle(key) == {"order": key}  # and the parent's store still works after its children
