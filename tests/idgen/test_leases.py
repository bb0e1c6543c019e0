"""Leased worker ids against the real Redis and PostgreSQL started by ``make test``."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest
import redis

from distkit._redis import key
from distkit.errors import (
    ClockMovedBackwardsError,
    ForkedGeneratorError,
    InvalidLeaseConfigError,
    InvalidWorkerIdError,
    WorkerIdExhaustedError,
    WorkerLeaseLostError,
)
from distkit.idgen import Butterfly, RedisWorkerLease, Snowflake
from distkit.idgen.lease import redis as redis_lease
from tests.fakeclock import FakeClock
from tests.idgen._workers import generate


@pytest.mark.slow
def test_eight_processes_four_redis_four_sql_zero_collisions(
    redis_url, database_url, pg_engine, pg_schema, namespace, tmp_path
):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(9)  # 8 generators + this test
    procs = []
    for i in range(8):
        kind, url = ("redis", redis_url) if i < 4 else ("sql", database_url)
        p = ctx.Process(
            target=generate, args=(kind, url, pg_schema, namespace, 50_000, str(tmp_path / f"ids{i}"), start)
        )
        p.start()
        procs.append(p)
    start.wait(60)  # all hold a lease: generate at once
    start.wait(60)  # all done: release
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    outputs = [[int(x) for x in (tmp_path / f"ids{i}").read_text().split()] for i in range(8)]
    workers = [o[0] for o in outputs]
    assert len(set(workers[:4])) == 4 and len(set(workers[4:])) == 4  # distinct worker ids in each store
    all_ids = [x for o in outputs for x in o[1:]]
    assert len(all_ids) == 400_000 == len(set(all_ids))  # zero collisions


def test_all_ids_taken_is_a_clear_error(store):
    a, b = store.lease(max_worker_id=1), store.lease(max_worker_id=1)
    assert {a.acquire(), b.acquire()} == {0, 1}
    with pytest.raises(WorkerIdExhaustedError, match="all 2 worker ids"):
        store.lease(max_worker_id=1).acquire()
    b.close()
    assert store.lease(max_worker_id=1).acquire() == b.worker_id  # released ids are reusable


def test_lease_removed_under_a_running_generator_stops_it_within_ttl(store):
    lost: list[str] = []
    gen = Snowflake.from_lease(store.lease(max_worker_id=15, ttl_s=1.0, on_lost=lost.append))
    gen.next_id()
    store.expire(store.leases[-1].worker_id)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5:
        try:
            gen.next_id()
        except WorkerLeaseLostError:
            break
        time.sleep(0.01)
    assert time.monotonic() - t0 <= 1.0 + 0.3
    assert len(lost) == 1
    with pytest.raises(WorkerLeaseLostError, match="no longer leased"):
        gen.next_id()


def test_heartbeat_keeps_the_lease_and_ttls_are_set(store):
    lease = store.lease(max_worker_id=15, ttl_s=0.6)
    gen = Snowflake.from_lease(lease)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.3:  # more than 2 ttls: only renewals keep it alive
        gen.next_id()
        time.sleep(0.05)
    assert lease.valid_for_s > 0
    if store.kind == "redis":
        base = key("idgen", lease.namespace)
        assert 0 < store.client.pttl(f"{base}:w:{lease.worker_id}") <= 600
        assert store.client.pttl(f"{base}:hw") > 0  # no key without a TTL
    gen.close()


def test_restart_after_clock_rollback_never_reissues(store):
    clock = FakeClock(1_800_000_000_000)
    gen = Snowflake.from_lease(store.lease(max_worker_id=0, ttl_s=1.0), clock=clock)
    issued = gen.next_ids(1000)
    gen.close()  # persists the exact last timestamp
    clock.advance(-60_000)  # the host comes back with its clock a minute behind

    with pytest.raises(ClockMovedBackwardsError, match="high-water mark"):
        Snowflake.from_lease(store.lease(max_worker_id=0, ttl_s=1.0), clock=clock)

    clock2 = FakeClock(1_800_000_000_000 - 60_000)
    bf = Butterfly.from_lease(store.lease(max_worker_id=0, ttl_s=1.0), clock=clock2)
    assert bf.worker_id == 0
    later = bf.next_ids(600)
    assert min(later) > max(issued)  # logical continue above the persisted mark
    bf.close()


def test_forked_child_leases_a_new_worker_id_and_static_generator_refuses(store, tmp_path):
    gen = Snowflake.from_lease(store.lease(max_worker_id=15))
    static = Snowflake(worker_id=3)
    parent_worker = gen.worker_id
    out = tmp_path / "child"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            gen.next_id()
            child_worker = gen.worker_id
            try:
                static.next_id()
                verdict = "static-worked"
            except ForkedGeneratorError:
                verdict = "static-refused"
            out.write_text(f"{child_worker} {verdict}")
            gen.close()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    child_worker, verdict = out.read_text().split()
    assert int(child_worker) != parent_worker
    assert verdict == "static-refused"
    gen.next_id()  # the parent keeps its own worker id
    assert gen.worker_id == parent_worker
    gen.close()


def test_default_lease_range_follows_the_layout(store):
    """8: no max_worker_id: Snowflake leases the 10-bit node space (datacenter + worker), every start works."""
    gens = [Snowflake.from_lease(store.lease()) for _ in range(20)]
    nodes = {(g.datacenter_id, g.worker_id) for g in gens}
    assert len(nodes) == 20
    assert all(0 <= dc <= 31 and 0 <= w <= 31 for dc, w in nodes)
    ids = [i for g in gens for i in g.next_ids(100)]
    assert len(set(ids)) == 2000
    for g in gens:
        g.close()
    with_dc = Snowflake.from_lease(store.lease(), datacenter_id=3)  # the worker field only
    assert with_dc.datacenter_id == 3 and 0 <= with_dc.worker_id <= 31
    with_dc.close()
    with pytest.raises(InvalidWorkerIdError, match="does not fit"):
        Snowflake.from_lease(store.lease(max_worker_id=1023), datacenter_id=1)
    assert store.held() == 0  # validated before leasing
    with pytest.raises(InvalidLeaseConfigError, match="from_lease"):
        store.lease().acquire()


def test_release_records_the_real_last_timestamp_and_failed_starts_do_not_ratchet(store):
    """9: close() persists the exact last timestamp; failed starts leave the mark alone; restarts do not wait."""
    gen = Snowflake.from_lease(store.lease(max_worker_id=0, ttl_s=1.0))
    last = gen.next_ids(5000)[-1]
    gen.close()
    mark = store.mark(0)
    assert mark == gen.decode(last).timestamp_ms
    behind = FakeClock(mark - 60_000)
    for _ in range(3):
        with pytest.raises(ClockMovedBackwardsError):
            Snowflake.from_lease(store.lease(max_worker_id=0, ttl_s=1.0), clock=behind)
    assert store.mark(0) == mark  # no ratchet
    t0 = time.monotonic()
    again = Snowflake.from_lease(store.lease(max_worker_id=0, ttl_s=1.0))
    assert time.monotonic() - t0 < 0.7  # not a ttl
    assert again.next_id() > last
    again.close()


def test_leases_use_the_runner_with_a_deadline_and_pass_every_key(redis_store, monkeypatch):
    """13 and the Runner contract: acquire receives the marks hash and every lease key in KEYS; every call
    carries a deadline."""
    calls: list[tuple[str, list[str], float | None]] = []
    real = redis_lease.Runner.__call__

    def spy(self, script, keys, args=(), *, deadline=None):
        calls.append((script.name, list(keys), deadline))
        return real(self, script, keys, args, deadline=deadline)

    monkeypatch.setattr(redis_lease.Runner, "__call__", spy)
    gen = Snowflake.from_lease(redis_store.lease(max_worker_id=7, ttl_s=1.0))
    gen.next_id()
    gen.close()
    base = key("idgen", redis_store.namespace)
    acquire = [c for c in calls if c[0] == "idgen/lease_acquire"]
    assert acquire[0][1] == [f"{base}:hw", *(f"{base}:w:{i}" for i in range(8))]
    assert all(d is not None and d > time.monotonic() - 5 for _, _, d in calls)
    assert {c[0] for c in calls} == {"idgen/lease_acquire", "idgen/lease_renew"}
    source = redis_lease._ACQUIRE.source
    assert ":w:" not in source and ".. ':" not in source  # no key names built inside the script


def test_redis_lease_with_decode_responses_and_on_redis_cluster(redis_url, redis_cluster, namespace):
    for client in (redis.Redis.from_url(redis_url, decode_responses=True), redis_cluster):
        lease = RedisWorkerLease(client, namespace=namespace, ttl_s=0.5)
        gen = Butterfly.from_lease(lease)
        ids = gen.next_ids(2000)
        gen.close()
        assert len(set(ids)) == 2000
        again = Butterfly.from_lease(RedisWorkerLease(client, namespace=namespace, max_worker_id=0, ttl_s=0.5))
        if again.worker_id == 0:
            assert again.next_id() > 0
        again.close()
        for k in client.scan_iter(match=f"*{namespace}*"):
            client.delete(k)


def test_dropped_generator_releases_its_worker_id(store):
    gen = Snowflake.from_lease(store.lease(max_worker_id=0, ttl_s=0.6))
    gen.next_id()
    assert store.held() == 1
    del gen
    deadline = time.monotonic() + 3
    while store.held() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.held() == 0
    assert not [t for t in threading.enumerate() if t.name == f"distkit-idgen-lease-{store.namespace}"]


def test_store_unreachable_stops_the_holder_by_its_deadline(private_redis, namespace):
    lost: list[str] = []
    client = redis.Redis.from_url(private_redis.url, socket_timeout=0.5)
    gen = Snowflake.from_lease(RedisWorkerLease(client, namespace, max_worker_id=0, ttl_s=1.0, on_lost=lost.append))
    gen.next_id()
    private_redis.stop()
    t0 = time.monotonic()
    issued_after = 0
    while time.monotonic() - t0 < 5:
        try:
            gen.next_id()
            issued_after += 1
        except WorkerLeaseLostError:
            break
    assert time.monotonic() - t0 <= 1.0 + 0.2  # last renewal + ttl - margin, never later
    assert issued_after > 0 and len(lost) == 1
    with pytest.raises(WorkerLeaseLostError):
        gen.next_id()
    gen.close()
    client.close()
