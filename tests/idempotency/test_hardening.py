"""Issue 15, items 1-8: each test failed on the code before the fix (real Redis, PostgreSQL and SQLite)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import os
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select

from distkit.errors import (
    IdempotencyInProgressError,
    IdempotencyKeyError,
    IdempotencyKeyMismatchError,
    IdempotencyStoredFailureError,
    IdempotencyStoreError,
    IdempotencyUnstorableResultError,
    InvalidArgumentError,
)
from distkit.idempotency import (
    IdempotencyRecord,
    LocalCache,
    RedisIdempotencyStore,
    SqlIdempotencyStore,
    idempotent,
)
from distkit.idempotency import record as record_module
from distkit.idempotency.record import payload_hash
from tests.fakeclock import FakeClock


class Status(enum.Enum):
    PAID = "paid"


@dataclasses.dataclass(frozen=True)
class Receipt:
    order: str
    status: Status
    took: dt.timedelta
    amount: Decimal


class CardDeclined(Exception):
    """A constructor with two arguments that formats its own message (args != constructor arguments)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class GatewayRefused(Exception):
    """Two arguments passed straight to Exception (args == constructor arguments)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(status, body)


class SoftDecline(CardDeclined):
    """A subclass of a listed exception."""


def _runs():
    lock = threading.Lock()
    runs: list[object] = []

    def add(x: object) -> None:
        with lock:
            runs.append(x)

    return runs, add


# --------------------------------------------------------------------------- 1. None / "" keys


@pytest.mark.parametrize("bad", [None, "", "   ", b""], ids=["None", "empty", "blank", "empty-bytes"])
def test_missing_key_is_refused_and_never_shares_a_record(store, bad):
    runs, add = _runs()

    @idempotent(store, key=lambda msg: msg.get("event_id"))
    def handle(msg):
        add(msg["body"])
        return msg["body"]

    @idempotent(store, key="msg.event_id")
    def by_path(msg):
        add(msg["body"])
        return msg["body"]

    for h in (handle, by_path):
        for body in ("first", "second"):  # before the fix: the second message got the first one's result
            with pytest.raises(IdempotencyKeyError, match="idempotency key"):
                h({"event_id": bad, "body": body})
    assert runs == []
    assert issubclass(IdempotencyKeyError, InvalidArgumentError)


def test_bytes_keys_are_read_as_utf8(store):
    @idempotent(store, key=lambda msg: msg["id"], scope="bytes-keys")
    def handle(msg):
        return 1

    @idempotent(store, key=lambda msg: msg["id"], scope="bytes-keys")
    def other(msg):
        raise AssertionError("same key as text and as bytes: must be a duplicate")

    k = f"é-{uuid.uuid4().hex}"
    assert handle({"id": k.encode()}) == 1 and other({"id": k}) == 1


# --------------------------------------------------------------------------- 3. results the codec cannot store


def test_unstorable_result_never_reruns_the_side_effect(store):
    runs, add = _runs()

    @idempotent(store, key="k")
    def charge(k):
        add(k)  # the side effect: charging the card
        return object()  # ...and a result no codec can store

    key = uuid.uuid4().hex
    with pytest.raises(IdempotencyUnstorableResultError, match="ran but its result cannot be stored") as first:
        charge(key)
    assert type(first.value.result) is object  # the caller still gets what the handler returned
    for _ in range(3):  # before the fix: the claim was released and every redelivery charged again
        with pytest.raises(IdempotencyUnstorableResultError, match="not run again"):
            charge(key)
    assert runs == [key]


def test_dataclass_enum_and_timedelta_results_replay_exactly(store):
    runs, add = _runs()

    @idempotent(store, key="k")
    def charge(k):
        add(k)
        return Receipt(k, Status.PAID, dt.timedelta(seconds=1.5), Decimal("9.90"))

    key = uuid.uuid4().hex
    outs = [charge(key) for _ in range(3)]
    assert runs == [key]
    assert outs == [Receipt(key, Status.PAID, dt.timedelta(seconds=1.5), Decimal("9.90"))] * 3
    assert outs[2].status is Status.PAID


# --------------------------------------------------------------------------- 4. canonical payload hash

_HASH_CHILD = r"""
import os, sys
seed = int(os.environ["PYTHONHASHSEED"])
items = [(i, f"v{i}") for i in range(20)]
items.sort(key=lambda kv: hash(str(kv[0])))  # insertion order differs per process
payload = {
    "tags": {"alpha", "beta", "gamma", "delta", "epsilon"},
    "frozen": frozenset({"x", "y", "z"}),
    "by_id": dict(items),
    "amount": 1 if seed % 2 else 1.0,
    "price": 0.5 if seed % 2 else __import__("decimal").Decimal("0.50"),
}
# record.py alone (the package __init__ would import redis and cost each child most of its start-up)
import importlib.util
spec = importlib.util.spec_from_file_location("distkit_record", sys.argv[1])
record = sys.modules["distkit_record"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(record)
sys.stdout.write(record.payload_hash(payload))
"""


_RECORD_PY = record_module.__file__


def _parent_payload():
    ns: dict = {}
    body = _HASH_CHILD.split("# record.py alone", maxsplit=1)[0].replace('int(os.environ["PYTHONHASHSEED"])', "2")
    exec(body, ns)
    return ns["payload"]


def test_payload_hash_is_the_same_in_eight_processes():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _HASH_CHILD, _RECORD_PY],
            env={**env, "PYTHONHASHSEED": str(seed)},
            stdout=subprocess.PIPE,
        )
        for seed in range(1, 9)
    ]
    hashes = {p.communicate(timeout=60)[0].decode() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(hashes) == 1 and "" not in hashes  # before the fix: 8 processes, 8 hashes
    assert hashes == {payload_hash(_parent_payload())}  # and the same as this process's


def test_payload_hash_canonical_forms():
    assert payload_hash({1: "a", 2: "b"}) == payload_hash({2: "b", 1: "a"})
    assert payload_hash({"n": 1}) == payload_hash({"n": 1.0}) == payload_hash({"n": Decimal("1.00")})
    assert payload_hash([0.1]) == payload_hash([Decimal("0.10")])
    aware = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    assert payload_hash(aware) == payload_hash(aware.astimezone(dt.timezone(dt.timedelta(hours=2))))
    distinct = [1, "1", True, [1, 2], [2, 1], {"a": 1}, {"a": 2}, {1: "a"}, {"1": "a"}, {1, 2}, 1.5, b"1", None]
    assert len({payload_hash(p) for p in distinct if p is not None}) == len(distinct) - 1
    assert payload_hash(None) == ""


@given(st.dictionaries(st.one_of(st.integers(), st.text(max_size=4)), st.integers(), max_size=8))
def test_payload_hash_ignores_dict_order(d):
    assert payload_hash(d) == payload_hash(dict(reversed(list(d.items()))))


def test_old_scheme_hashes_are_not_compared(store):
    """A record from before the upgrade holds an unversioned hash: redelivery must not raise a false mismatch."""
    key = f"legacy:{uuid.uuid4().hex}"
    assert store.begin(key, "old-owner", "0123456789abcdef0123456789abcdef", 60_000, 60_000).must_run
    from distkit.idempotency.codec import TaggedJsonCodec

    assert store.complete(key, "old-owner", TaggedJsonCodec().encode({"ok": True, "value": "old"}), 60_000)

    @idempotent(store, key="k", payload=lambda k: {"p": 1}, scope="legacy")
    def handle(k):
        raise AssertionError("must not run")

    assert handle(key.split(":", 1)[1]) == "old"


# --------------------------------------------------------------------------- 5. reclaim refreshes the expiry


def test_reclaim_gives_the_record_a_full_life_again(store):
    """ttl 1.6 s, in-progress 1.5 s: a dead owner, one reclaimer still running after the record's first expiry,
    and a third delivery then. Redis: 2 runs. SQL before the fix: 3 (the row expired under the reclaimer)."""
    ip_ms, ttl_ms = 1500, 1600
    key = uuid.uuid4().hex
    assert store.begin(f"reclaim:{key}", "dead-owner", "", ip_ms, ttl_ms).must_run  # run 1: SIGKILLed after this
    claimed_at = time.monotonic()
    runs, add = _runs()
    holding, finish = threading.Event(), threading.Event()

    @idempotent(store, key="k", ttl_s=ttl_ms / 1000, in_progress_ttl_s=ip_ms / 1000, scope="reclaim")
    def handle(k):
        add(k)
        if len(runs) > 1:
            return "a third run"  # (what the SQL store allowed before the fix)
        holding.set()
        finish.wait(30)
        return "done"

    results: list[object] = []

    def reclaimer() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                results.append(handle(key))
                return
            except IdempotencyInProgressError:
                time.sleep(0.05)

    time.sleep(max(0.0, claimed_at + ip_ms / 1000 - time.monotonic()))
    t = threading.Thread(target=reclaimer)
    t.start()
    assert holding.wait(30)  # run 2 is going; the original record's ttl (1.6 s from the claim) now runs out
    reclaimed_at = time.monotonic()
    time.sleep(max(0.0, claimed_at + ttl_ms / 1000 + 0.15 - time.monotonic()))
    assert time.monotonic() - reclaimed_at < ip_ms / 1000  # still inside the reclaimer's in-progress window
    with pytest.raises(IdempotencyInProgressError):
        handle(key)  # third delivery: refused, not run
    finish.set()
    t.join(30)
    assert results == ["done"] and handle(key) == "done"
    assert len(runs) == 1  # 2 runs in all: the dead owner and exactly one reclaimer


# --------------------------------------------------------------------------- 6. decode_responses=True


@pytest.mark.parametrize("direct", [True, False], ids=["direct-lane", "client-path"])
def test_decode_responses_client_works(redis_url, namespace, direct):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisIdempotencyStore(client, prefix=f"idem-{namespace}", direct=direct)
    runs, add = _runs()
    value = {"id": uuid.UUID(int=3), "raw": b"\xff\x00", "text": "Zürich €"}

    @idempotent(store, key="k", payload=lambda k: {"k": k})
    def handle(k):
        add(k)
        return value

    @idempotent(store, key="k", store_exceptions=(CardDeclined,))
    def declined(k):
        add(k)
        raise CardDeclined("51", "insufficient funds")

    key = uuid.uuid4().hex
    assert [handle(key) for _ in range(3)] == [value] * 3  # before the fix: TypeError on the duplicate
    for _ in range(2):
        with pytest.raises(CardDeclined, match="51: insufficient funds"):
            declined(key)
    assert runs == [key, key]
    for k in client.scan_iter(match=f"*{namespace}*"):
        client.delete(k)
    store.close()
    client.close()


async def test_decode_responses_async_client_works(redis_url, namespace):
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisIdempotencyStore(client, prefix=f"idem-{namespace}")
    runs, add = _runs()

    @idempotent(store, key="k")
    async def handle(k):
        add(k)
        return {"at": dt.date(2026, 12, 2)}

    key = uuid.uuid4().hex
    assert [await handle(key) for _ in range(3)] == [{"at": dt.date(2026, 12, 2)}] * 3
    assert runs == [key]
    async for k in client.scan_iter(match=f"*{namespace}*"):
        await client.delete(k)
    await store.aclose()
    await client.aclose()


def test_decode_responses_with_a_binary_codec_is_refused_not_rerun(redis_url, namespace):
    class Raw:
        def encode(self, value):
            return b"\xff" + repr(value).encode()

        def decode(self, data):
            raise AssertionError("never stored")

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisIdempotencyStore(client, prefix=f"idem-{namespace}")
    runs, add = _runs()

    @idempotent(store, key="k", codec=Raw())
    def handle(k):
        add(k)
        return 1

    key = uuid.uuid4().hex
    with pytest.raises(IdempotencyUnstorableResultError, match="UTF-8|utf-8"):
        handle(key)
    assert runs == [key]
    client.delete(*client.keys(f"*{namespace}*"))
    client.close()


# --------------------------------------------------------------------------- 7. messages and edges


def test_store_failure_after_the_handler_ran_says_it_ran(private_redis):
    store = RedisIdempotencyStore(redis.Redis.from_url(private_redis.url, socket_timeout=1), prefix="idem")
    runs, add = _runs()

    @idempotent(store, key="k")
    def strict(k):
        add(k)
        private_redis.stop()  # Redis dies after the side effect, before the result is stored
        return {"charged": 1}

    with pytest.raises(IdempotencyStoreError) as err:
        strict("a")
    assert "RAN" in str(err.value) and "did not run" not in str(err.value)
    assert err.value.result == {"charged": 1}
    private_redis.start()

    @idempotent(store, key="k", on_store_error="run")
    def lenient(k):
        add(k)
        private_redis.stop()
        return 2

    assert lenient("b") == 2  # the handler ran: its value is returned (with a warning), never a second run
    assert runs == ["a", "b"]


def test_failing_release_never_hides_the_handlers_exception(private_redis):
    store = RedisIdempotencyStore(redis.Redis.from_url(private_redis.url, socket_timeout=1), prefix="idem")

    @idempotent(store, key="k")
    def handle(k):
        private_redis.stop()
        raise KeyError("the handler's own failure")

    @idempotent(store, key="k", store_exceptions=(CardDeclined,))
    def declined(k):
        private_redis.stop()
        raise CardDeclined("05", "do not honour")

    with pytest.raises(KeyError, match="the handler's own failure") as err:  # before: IdempotencyStoreError
        handle("a")
    assert any("release" in n for n in getattr(err.value, "__notes__", []))
    private_redis.start()
    with pytest.raises(CardDeclined, match="do not honour"):
        declined("b")


def test_exceptions_with_several_constructor_arguments_replay_faithfully(store):
    runs, add = _runs()

    @idempotent(store, key="k", store_exceptions=(CardDeclined, GatewayRefused), scope="failures")
    def charge(k):
        add(k)
        if k.startswith("declined"):
            raise CardDeclined("51", "insufficient funds")
        if k.startswith("soft"):
            raise SoftDecline("65", "limit exceeded")
        raise GatewayRefused(503, "try later")

    suffix = uuid.uuid4().hex
    for k, cls, text in [
        (f"declined-{suffix}", CardDeclined, "51: insufficient funds"),
        (f"refused-{suffix}", GatewayRefused, "(503, 'try later')"),
        (f"soft-{suffix}", SoftDecline, "65: limit exceeded"),
    ]:
        caught = []
        for _ in range(3):  # before the fix: the replays raised TypeError
            with pytest.raises(cls) as err:
                charge(k)
            caught.append(err.value)
        first, *replays = caught
        for r in replays:
            assert type(r) is cls and str(r) == text and r.args == first.args and vars(r) == vars(first)
    assert len(runs) == 3

    @idempotent(store, key="k", scope="failures")  # same records, but the class is no longer listed
    def unlisted(k):
        raise AssertionError("must not run")

    with pytest.raises(IdempotencyStoredFailureError) as err:
        unlisted(f"declined-{suffix}")
    assert err.value.error_type.endswith("CardDeclined") and err.value.error_message == "51: insufficient funds"


def test_sql_key_too_long_is_refused_up_front_not_run_unguarded(pg_engine):
    store = SqlIdempotencyStore(pg_engine)
    runs, add = _runs()

    @idempotent(store, key="k", on_store_error="run")
    def handle(k):
        add(k)
        return 1

    for bad in ["x" * 600, "nul\x00byte"]:  # before: a store 'outage', so on_store_error='run' ran it unguarded
        with pytest.raises(IdempotencyKeyError, match="longer than|NUL"):
            handle(bad)
    ok = "é" * (512 - len(f"{handle.__module__}.{handle.__qualname__}:"))  # exactly 512 characters with the scope
    assert handle(ok) == 1 and handle(ok) == 1
    assert runs == [ok]


def test_sqlite_in_memory_engine_with_async_handler_and_threads():
    store = SqlIdempotencyStore(create_engine("sqlite://"))
    runs, add = _runs()

    @idempotent(store, key="k")
    async def handle(k):
        add(k)
        return {"n": 0}

    async def main():
        return [await handle("a") for _ in range(3)] + [await handle("b")]

    assert asyncio.run(main()) == [{"n": 0}] * 4  # before the fix: "no such table" (the store runs in a thread)

    @idempotent(store, key="k", wait_s=10, poll_s=0.01)
    def sync_handle(k):
        add(k)
        time.sleep(0.05)
        return k

    threads = [threading.Thread(target=sync_handle, args=("c",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(runs) == ["a", "b", "c"]  # every thread saw the same in-memory database


# --------------------------------------------------------------------------- 8. local cache, response hook, purge


def test_local_cache_answers_duplicates_without_a_round_trip(store):
    calls = []
    real_begin = store.begin

    def counting_begin(*a, **kw):
        calls.append(a[0])
        return real_begin(*a, **kw)

    store.begin = counting_begin
    cache = LocalCache(max_items=2, ttl_s=60)
    runs, add = _runs()

    @idempotent(store, key="k", payload=lambda k, amount: amount, local_cache=cache)
    def charge(k, amount):
        add(k)
        return {"k": k, "tags": ["x"]}

    keys = [uuid.uuid4().hex for _ in range(3)]
    first = charge(keys[0], 5)
    first["tags"].append("mutated by the caller")
    assert [charge(keys[0], 5) for _ in range(5)] == [{"k": keys[0], "tags": ["x"]}] * 5
    assert len(calls) == 1  # one begin for the first run, none for the 5 duplicates
    with pytest.raises(IdempotencyKeyMismatchError):
        charge(keys[0], 6)  # the payload check also applies to cached records
    charge(keys[1], 5)
    charge(keys[2], 5)  # bounded: the least recently used entry (keys[0]) is dropped
    assert len(cache) == 2
    before = len(calls)
    assert charge(keys[0], 5) == {"k": keys[0], "tags": ["x"]}
    assert len(calls) == before + 1 and len(runs) == 3  # back to the store, which answers without running


def test_local_cache_entries_expire_and_never_outlive_the_record(store):
    short_cache = LocalCache(max_items=10, ttl_s=0.2)
    runs, add = _runs()

    @idempotent(store, key="k", local_cache=short_cache, ttl_s=60)
    def handle(k):
        add(k)
        return 1

    key = uuid.uuid4().hex
    handle(key)
    full_key = f"{handle.__module__}.{handle.__qualname__}:{key}"
    assert short_cache.get(full_key) is not None
    time.sleep(0.3)
    assert short_cache.get(full_key) is None and handle(key) == 1 and runs == [key]

    long_cache = LocalCache(max_items=10, ttl_s=3600)

    @idempotent(store, key="k", local_cache=long_cache, ttl_s=2, scope="short-record")
    def brief(k):
        return 1

    brief(key)
    assert long_cache.get(f"short-record:{key}").expires_at - time.monotonic() <= 2.0


def test_response_hook_sees_every_replay_and_never_the_first_run(store):
    seen: list[IdempotencyRecord] = []

    def hook(value, record):
        seen.append(record)
        return {**value, "replayed": True}

    cache = LocalCache()

    @idempotent(store, key="k", payload=lambda k: {"k": k}, response_hook=hook, local_cache=cache)
    def handle(k):
        return {"k": k}

    key = uuid.uuid4().hex
    assert handle(key) == {"k": key}
    assert seen == []
    assert handle(key) == {"k": key, "replayed": True}  # from the local cache
    cache.clear()
    assert handle(key) == {"k": key, "replayed": True}  # from the store
    assert [r.from_local_cache for r in seen] == [True, False]
    assert all(r.key.endswith(key) and r.payload_hash == payload_hash({"k": key}) for r in seen)
    assert 0 < seen[1].expires_in_ms <= 86_400_000


def test_sql_expired_rows_are_deleted_without_calling_purge(pg_engine):
    clock = FakeClock()
    store = SqlIdempotencyStore(pg_engine, clock=clock, purge_interval_s=3600, purge_batch=1000)

    @idempotent(store, key="k", ttl_s=1, in_progress_ttl_s=1)
    def handle(k):
        return k

    for i in range(30):
        handle(f"old-{i}")  # the first complete purges (nothing yet); the next hour's completes do not
    clock.advance(10_000)  # all 30 expired

    def rows():
        with pg_engine.connect() as c:
            return c.execute(select(func.count()).select_from(store.table)).scalar_one()

    handle("new-0")
    assert rows() == 31  # amortised: no purge within purge_interval_s
    store._next_purge = 0.0  # the interval has passed
    handle("new-1")
    assert rows() == 2  # the expired rows went without anyone calling purge_expired()

    batched = SqlIdempotencyStore(pg_engine, clock=clock, purge_interval_s=0, purge_batch=5)
    for i in range(12):
        batched.begin(f"b-{i}", "t", "", 1000, 1000)
    clock.advance(10_000)
    assert batched.release("nobody", "t") is False and rows() == 14 - 5  # one bounded batch per call


# --------------------------------------------------------------------------- the asyncio twins


@pytest.fixture(params=["redis-async", "sql-in-thread"])
def async_store(request, namespace):
    if request.param == "redis-async":
        return RedisIdempotencyStore(request.getfixturevalue("async_redis_client"), prefix=f"idem-{namespace}")
    return SqlIdempotencyStore(request.getfixturevalue("pg_engine"))


async def test_async_twins_refuse_keys_keep_unstorable_records_and_replay_failures(async_store):
    runs, add = _runs()

    @idempotent(async_store, key=lambda k: k)
    async def no_key(k):
        add(k)

    with pytest.raises(IdempotencyKeyError):
        await no_key(None)

    @idempotent(async_store, key="k")
    async def unstorable(k):
        add(k)
        return object()

    @idempotent(async_store, key="k", store_exceptions=(CardDeclined,))
    async def declined(k):
        add(k)
        raise CardDeclined("51", "insufficient funds")

    key = uuid.uuid4().hex
    for _ in range(3):
        with pytest.raises(IdempotencyUnstorableResultError):
            await unstorable(key)
        with pytest.raises(CardDeclined) as err:
            await declined(key)
        assert err.value.code == "51" and str(err.value) == "51: insufficient funds"
    assert runs == [key, key]


async def test_async_failing_release_keeps_the_handlers_exception(private_redis):
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(private_redis.url, socket_timeout=1)
    store = RedisIdempotencyStore(client, prefix="idem")

    @idempotent(store, key="k")
    async def handle(k):
        private_redis.stop()
        raise KeyError("the handler's own failure")

    @idempotent(store, key="k")
    async def ran(k):
        private_redis.stop()
        return 7

    with pytest.raises(KeyError, match="own failure"):
        await handle("a")
    private_redis.start()
    with pytest.raises(IdempotencyStoreError, match="RAN") as err:
        await ran("b")
    assert err.value.result == 7
    with pytest.raises(IdempotencyStoreError, match="did not run"):
        await ran("c")  # Redis is down before the handler: it does not run
    await client.aclose()


def test_sql_outage_maps_to_the_store_error_policy(database_url, pg_engine):
    import socket

    from sqlalchemy.engine import make_url

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # nothing listens here once the socket is closed
    store = SqlIdempotencyStore(pg_engine)
    store.engine = create_engine(make_url(database_url).set(port=dead_port), connect_args={"connect_timeout": 2})
    runs, add = _runs()

    @idempotent(store, key="k")
    def strict(k):
        add(k)

    @idempotent(store, key="k", on_store_error="run")
    def lenient(k):
        add(k)
        return "unguarded"

    with pytest.raises(IdempotencyStoreError, match="did not run") as err:
        strict("a")
    assert "password" not in str(err.value).lower() or "***" in str(err.value)
    assert lenient("b") == "unguarded" and runs == ["b"]
    store.engine.dispose()


@pytest.mark.parametrize(
    "reply",
    [
        redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica."),
        redis.ResponseError("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT."),
        redis.exceptions.TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
    ],
    ids=["readonly-replica", "busy-script", "tryagain"],
)
def test_redis_replies_that_mean_unavailable_follow_the_outage_policy(redis_client, namespace, reply):
    """A failover (READONLY), a stuck script (BUSY) or a resharding slot is an outage for the policy; a wrong
    request (WRONGTYPE) is raised as itself and never runs the handler unguarded."""
    store = RedisIdempotencyStore(redis_client, prefix=f"idem-{namespace}")

    def failing(*a, **kw):
        raise reply

    store._run = failing
    runs, add = _runs()

    @idempotent(store, key="k", on_store_error="run")
    def lenient(k):
        add(k)
        return 1

    @idempotent(store, key="k")
    def strict(k):
        add(k)

    assert lenient("a") == 1
    with pytest.raises(IdempotencyStoreError, match="did not run"):
        strict("b")
    assert runs == ["a"]


def test_a_wrong_request_is_not_an_outage(redis_client, namespace):
    store = RedisIdempotencyStore(redis_client, prefix=f"idem-{namespace}")
    runs, add = _runs()

    @idempotent(store, key="k", on_store_error="run", scope="wrongtype")
    def lenient(k):
        add(k)

    redis_client.set(store.record_key("wrongtype:a"), "not a hash")  # someone else's string at our key
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        lenient("a")
    assert runs == []  # before the fix: treated as an outage and run unguarded


# --------------------------------------------------------------------------- bounded calls (the Runner's deadline)

_RUNNER_PENDING = ("direct=False is redis-py's own command path: bounded by the client's socket timeouts, not by "
                   "distkit's deadline (docs/redis-plumbing.md)")


@pytest.mark.parametrize(
    "direct",
    [True, pytest.param(False, marks=pytest.mark.xfail(reason=_RUNNER_PENDING, strict=False))],
    ids=["direct-lane", "client-path"],
)
def test_killed_redis_answers_within_the_stores_timeout(direct):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens: connection refused
    store = RedisIdempotencyStore(redis.Redis(port=port), direct=direct, timeout_s=1.0)  # a default client

    @idempotent(store, key="k")
    def handle(k):
        raise AssertionError("must not run")

    t0 = time.monotonic()
    with pytest.raises(IdempotencyStoreError, match="did not run"):
        handle("a")
    assert time.monotonic() - t0 < 1.0 + 0.25


@pytest.mark.parametrize(
    "direct",
    [True, pytest.param(False, marks=pytest.mark.xfail(reason=_RUNNER_PENDING, strict=True))],
    ids=["direct-lane", "client-path"],
)
def test_black_holed_redis_answers_within_the_stores_timeout(direct):
    import socket

    hole = socket.socket()  # accepts connections (the kernel does) and never answers
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    store = RedisIdempotencyStore(redis.Redis(port=hole.getsockname()[1]), direct=direct, timeout_s=1.0)
    outcome: list[tuple[float, BaseException]] = []

    @idempotent(store, key="k")
    def handle(k):
        raise AssertionError("must not run")

    def call() -> None:
        t0 = time.monotonic()
        try:
            handle("a")
        except BaseException as exc:
            outcome.append((time.monotonic() - t0, exc))

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(1.0 + 1.0)
    hole.close()  # (unblocks a call still waiting)
    assert outcome, "still blocked after timeout_s + 1 s"
    took, exc = outcome[0]
    assert isinstance(exc, IdempotencyStoreError) and took < 1.0 + 0.25


def test_a_plain_function_with_a_store_on_an_asyncio_client_is_refused_at_decoration() -> None:
    """It type-checked (the store takes either kind of client) and was accepted; its first call then failed deep
    inside with a bare TypeError ('coroutine' object is not subscriptable)."""
    import fakeredis

    from distkit.errors import InvalidArgumentError
    from distkit.idempotency import RedisIdempotencyStore, idempotent

    store = RedisIdempotencyStore(fakeredis.FakeAsyncRedis())
    with pytest.raises(InvalidArgumentError, match="plain function"):
        idempotent(store, key="k")(lambda k: k)

    async def handler(k: str) -> str:
        return k

    idempotent(store, key="k")(handler)  # the asyncio kind is fine
