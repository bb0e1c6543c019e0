"""Fault injection against leased generators on the real Redis and PostgreSQL: every test counts duplicates
across everything any holder issued, and the answer must be exactly 0 (issue 12, items 1-7)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import redis

from distkit._redis import key
from distkit.errors import ChildWorkerLeaseError, ClockMovedBackwardsError, GeneratorClosedError
from distkit.idgen import Butterfly, RedisWorkerLease, Snowflake
from tests.idgen.conftest import acquire_when_free, duplicates, is_stopped, spawn_worker, wait_for

pytestmark = pytest.mark.slow


def _real_ms() -> int:
    return time.time_ns() // 1_000_000


def test_quiet_spell_then_burst_then_crash_successor_behind_reissues_nothing(store, tmp_path):
    """1: the mark must cover every id the holder could issue before its lease could expire, not "newest + ttl"."""
    out = tmp_path / "a.json"
    cfg = {**store.cfg(), "scenario": "burst_crash", "ttl_s": 0.8, "idle_s": 1.0, "burst": 40_000, "out": str(out)}
    proc = spawn_worker(cfg)
    assert proc.wait(60) == -signal.SIGKILL, proc.stderr.read().decode() if proc.stderr else ""
    crashed = json.loads(out.read_text())
    burst_first_ms = Snowflake(worker_id=0).decode(crashed["burst_first"]).timestamp_ms
    # the successor's clock reads the crashed holder's burst time, as if it were that far behind (but not more than
    # half a ttl behind the mark it will find, so that it starts instead of refusing)
    offset: list[int] = []

    def behind() -> int:
        if not offset:  # pinned at the generator's first clock read, right after it leased the worker id
            offset.append(_real_ms() - max(burst_first_ms, store.mark(0) - 400))
        return _real_ms() - offset[0]

    def start() -> Snowflake:
        offset.clear()
        return Snowflake.from_lease(store.lease(max_worker_id=0, ttl_s=0.8), clock=behind)

    successor = acquire_when_free(start)
    assert successor.worker_id == 0
    issued = successor.next_ids(60_000)
    successor.close()
    everything = crashed["ids"] + issued
    assert len(everything) == 40_010 + 60_000
    assert duplicates(everything) == 0


@pytest.mark.parametrize(("kind", "gen_cls"), [("redis", Snowflake), ("sql", Butterfly)])
def test_forked_child_whose_release_fails_refuses_every_id(request, namespace, tmp_path, kind, gen_cls):
    """2: the only worker id is the parent's, so the child cannot lease one: a typed error, never the parent's id."""
    from tests.idgen.conftest import Store

    store = Store(kind, request, namespace)
    gen = gen_cls.from_lease(store.lease(max_worker_id=0, ttl_s=1.0))
    before = gen.next_ids(100)
    out = tmp_path / "child.json"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            ids, errors = [], []
            for _ in range(200):
                try:
                    ids.append(gen.next_id())
                except ChildWorkerLeaseError as exc:
                    errors.append(type(exc.__cause__).__name__)
            try:
                ids.extend(gen.next_ids(50))
            except ChildWorkerLeaseError:
                errors.append("batch")
            out.write_text(json.dumps({"ids": ids, "errors": errors}))
        finally:
            os._exit(0)
    parent = before + gen.next_ids(20_000)  # the parent keeps issuing meanwhile
    os.waitpid(pid, 0)
    child = json.loads(out.read_text())
    assert child["ids"] == []
    assert len(child["errors"]) == 201 and child["errors"][0] == "WorkerIdExhaustedError"
    assert duplicates(parent + child["ids"]) == 0
    assert gen.worker_id == 0 and gen.next_id() > parent[-1]  # the parent is unaffected
    gen.close()
    store.close()


@pytest.mark.parametrize(
    ("kind", "mode"), [("redis", "before"), ("sql", "after")]
)
def test_sigstop_around_the_clock_read_past_the_ttl_issues_no_duplicate(request, namespace, tmp_path, kind, mode):
    """4: a holder stopped around its clock read until a successor took over issues nothing at or above the
    successor's first timestamp (before the read: it raises; after: its id predates the successor's mark)."""
    from tests.idgen.conftest import Store

    store = Store(kind, request, namespace)
    out = tmp_path / "a.json"
    cfg = {**store.cfg(), "scenario": "pause", "mode": mode, "ttl_s": 0.8, "out": str(out)}
    proc = spawn_worker(cfg)
    try:
        wait_for(lambda: is_stopped(proc.pid) or proc.poll() is not None, 30, "the holder to SIGSTOP itself")
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        successor = acquire_when_free(lambda: Snowflake.from_lease(store.lease(max_worker_id=0, ttl_s=0.8)))
        issued: list[int] = successor.next_ids(4096)
        stop = threading.Event()

        def keep_issuing() -> None:
            while not stop.is_set() and len(issued) < 1_500_000:
                issued.extend(successor.next_ids(4096))  # every millisecond, every sequence number

        t = threading.Thread(target=keep_issuing)
        t.start()
        os.kill(proc.pid, signal.SIGCONT)
        code = proc.wait(30)
        stop.set()
        t.join()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        store.close()
    assert code == 0, proc.stderr.read().decode() if proc.stderr else ""
    holder = json.loads(out.read_text())
    assert len(holder["ids"]) >= 2000 and len(issued) > 4096
    assert duplicates(holder["ids"]) == 0 and duplicates(issued) == 0
    assert not set(holder["ids"]) & set(issued)
    if mode == "before":
        assert len(holder["ids"]) == 2000 and holder["errors"]  # nothing issued after the pause
    else:
        assert len(holder["ids"]) in (2000, 2001)  # at most the id whose time was read before the pause
    assert max(holder["ids"]) < min(issued)


def test_flushall_successor_waits_until_the_old_holder_stopped(private_redis, tmp_path, namespace):
    """5: FLUSHALL loses the lease and the marks; the new lease waits one ttl, the old holder stops by then."""
    client = redis.Redis.from_url(private_redis.url)
    out, ready, stop = tmp_path / "a.json", tmp_path / "ready", tmp_path / "stop"
    cfg = {
        "kind": "redis",
        "url": private_redis.url,
        "schema": "",
        "namespace": namespace,
        "scenario": "hold",
        "ttl_s": 1.0,
        "out": str(out),
        "ready": str(ready),
        "stop": str(stop),
    }
    proc = spawn_worker(cfg)
    try:
        wait_for(ready.exists, 30, "the holder to lease its worker id")
        time.sleep(0.3)  # it is issuing
        client.flushall()
        t0 = time.monotonic()
        successor = Snowflake.from_lease(RedisWorkerLease(client, namespace, max_worker_id=0, ttl_s=1.0))
        waited = time.monotonic() - t0
        issued = successor.next_ids(50_000)
        stop.write_text("x")
        assert proc.wait(30) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    holder = json.loads(out.read_text())
    assert len(holder["ids"]) > 1000
    assert duplicates(holder["ids"] + issued) == 0
    assert max(holder["ids"]) < min(issued)  # the old holder had stopped before the successor's first id
    assert waited >= 0.9  # one ttl (the marks were new)
    assert holder["error"] == "WorkerLeaseLostError"  # it noticed the lost record and stopped
    successor.close()
    client.close()


@pytest.mark.parametrize(("kind", "gen_cls"), [("sql", Snowflake), ("redis", Butterfly)])
def test_forked_child_honours_the_mark_of_its_new_worker_id(request, namespace, tmp_path, kind, gen_cls):
    """6: the child's new worker id carries a mark one hour ahead: Snowflake refuses, Butterfly issues above it."""
    from tests.idgen.conftest import Store

    store = Store(kind, request, namespace)
    gen = gen_cls.from_lease(store.lease(max_worker_id=1, ttl_s=1.0))
    other = 1 - gen.worker_id
    mark = _real_ms() + 3_600_000
    store.set_mark(other, mark)
    out = tmp_path / "child.json"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            try:
                ids = gen.next_ids(600) + [gen.next_id()]
                res: dict[str, object] = {"ids": ids, "worker": gen.worker_id}
            except ChildWorkerLeaseError as exc:
                res = {"ids": [], "cause": type(exc.__cause__).__name__}
            gen.close()
            out.write_text(json.dumps(res))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    child = json.loads(out.read_text())
    if gen_cls is Snowflake:
        assert child == {"ids": [], "cause": ClockMovedBackwardsError.__name__}
    else:
        assert child["worker"] == other and len(child["ids"]) == 601
        assert min(gen.decode(i).timestamp_ms for i in child["ids"]) > mark
    gen.close()
    store.close()


def test_generator_closed_before_fork_stays_closed_in_the_child(store, tmp_path):
    """7: no lease, no heartbeat thread, no ids in the child of a closed generator."""
    gen = Snowflake.from_lease(store.lease(max_worker_id=3, ttl_s=1.0))
    gen.next_id()
    gen.close()
    assert store.held() == 0
    out = tmp_path / "child.json"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            try:
                gen.next_id()
                verdict = "issued"
            except GeneratorClosedError:
                verdict = "closed"
            threads = [t.name for t in threading.enumerate() if t.name.startswith("distkit-idgen")]
            out.write_text(json.dumps({"verdict": verdict, "threads": threads, "held": store.held()}))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert json.loads(out.read_text()) == {"verdict": "closed", "threads": [], "held": 0}
    assert store.held() == 0
    with pytest.raises(GeneratorClosedError):
        gen.next_id()


def test_the_marks_hash_key_is_the_one_flushed(redis_store):
    """The FLUSHALL test's premise: the acquire script records the marks' creation time, with a TTL."""
    gen = Snowflake.from_lease(redis_store.lease(ttl_s=1.0))
    marks = key("idgen", redis_store.namespace, "hw")
    assert redis_store.client.hexists(marks, "init") and redis_store.client.pttl(marks) > 0
    gen.close()


def test_no_timestamp_beyond_the_known_valid_deadline_even_after_a_takeover(store):
    """4, deterministic: the clock jumps far past an old holder's deadline after its record was taken over; its
    next id must be refused (read the clock, compare with the deadline), not issued at the successor's time."""
    from distkit.errors import WorkerLeaseLostError
    from tests.fakeclock import FakeClock

    clock = FakeClock(_real_ms())
    old = Snowflake.from_lease(store.lease(max_worker_id=0, ttl_s=1.0), clock=clock)
    before = old.next_ids(100)
    store.expire(0)
    successor = Snowflake.from_lease(store.lease(max_worker_id=0, ttl_s=1.0), clock=clock)
    clock.advance(5000)  # far beyond what the old holder's last renewal covers
    after = successor.next_ids(100)
    with pytest.raises(WorkerLeaseLostError):
        old.next_id()
    assert duplicates(before + after) == 0 and max(before) < min(after)
    successor.close()
    old.close()
