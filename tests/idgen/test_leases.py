"""Leased worker ids against the real Redis and PostgreSQL started by ``make test``."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from distkit._redis import key
from distkit.errors import (
    ClockMovedBackwardsError,
    ForkedGeneratorError,
    WorkerIdExhaustedError,
    WorkerLeaseLostError,
)
from distkit.idgen import Butterfly, RedisWorkerLease, Snowflake, SqlWorkerLease
from tests.fakeclock import FakeClock
from tests.idgen._workers import generate


@pytest.fixture(params=["redis", "sql"])
def make_lease(request, namespace):
    leases = []

    def make(**kw):
        if request.param == "redis":
            lease = RedisWorkerLease(request.getfixturevalue("redis_client"), namespace=namespace, **kw)
        else:
            lease = SqlWorkerLease(request.getfixturevalue("pg_engine"), namespace=namespace, **kw)
        leases.append(lease)
        return lease

    make.kind = request.param
    yield make
    for lease in leases:
        lease.close()


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


def test_all_ids_taken_is_a_clear_error(make_lease):
    a, b = make_lease(max_worker_id=1, ttl_s=10), make_lease(max_worker_id=1, ttl_s=10)
    assert {a.acquire(), b.acquire()} == {0, 1}
    with pytest.raises(WorkerIdExhaustedError, match="all 2 worker ids"):
        make_lease(max_worker_id=1, ttl_s=10).acquire()
    b.close()
    assert make_lease(max_worker_id=1, ttl_s=10).acquire() == b.worker_id  # released ids are reusable


def test_lease_removed_under_a_running_generator_stops_it_within_ttl(make_lease, redis_client, pg_engine):
    lost: list[str] = []
    lease = make_lease(max_worker_id=15, ttl_s=1.5, on_lost=lost.append)
    gen = Snowflake.from_lease(lease)
    gen.next_id()
    if make_lease.kind == "redis":
        redis_client.delete(f"{key('idgen', lease.namespace)}:w:{lease.worker_id}")
    else:
        from sqlalchemy import update

        with pg_engine.begin() as c:
            c.execute(update(lease.table).values(token="stolen"))
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5:
        try:
            gen.next_id()
        except WorkerLeaseLostError:
            break
        time.sleep(0.01)
    assert time.monotonic() - t0 <= 1.5 + 0.3
    assert len(lost) == 1
    with pytest.raises(WorkerLeaseLostError, match="no longer leased"):
        gen.next_id()


def test_heartbeat_keeps_the_lease_and_ttls_are_set(make_lease, redis_client):
    lease = make_lease(max_worker_id=15, ttl_s=0.9)
    gen = Snowflake.from_lease(lease)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.5:  # almost 3 ttls: only heartbeats keep it alive
        gen.next_id()
        time.sleep(0.05)
    if make_lease.kind == "redis":
        base = key("idgen", lease.namespace)
        assert 0 < redis_client.pttl(f"{base}:w:{lease.worker_id}") <= 900
        assert redis_client.pttl(f"{base}:hw") > 0  # no key without a TTL


def test_restart_after_clock_rollback_never_reissues(make_lease):
    clock = FakeClock(1_800_000_000_000)
    first = make_lease(max_worker_id=0, ttl_s=5)
    gen = Snowflake.from_lease(first, clock=clock)
    issued = gen.next_ids(1000)
    gen.close()  # persists the mark (newest + ttl)
    clock.advance(-60_000)  # the host comes back with its clock a minute behind

    with pytest.raises(ClockMovedBackwardsError, match="high-water mark"):
        Snowflake.from_lease(make_lease(max_worker_id=0, ttl_s=5), clock=clock)

    clock2 = FakeClock(1_800_000_000_000 - 60_000)
    bf = Butterfly.from_lease(make_lease(max_worker_id=0, ttl_s=5), clock=clock2)
    assert bf.worker_id == 0
    later = bf.next_ids(600)
    assert min(later) > max(i for i in issued)  # logical continue above the persisted mark
    bf.close()


def test_forked_child_releases_a_new_worker_id_and_static_generator_refuses(make_lease, tmp_path):
    lease = make_lease(max_worker_id=15, ttl_s=10)
    gen = Snowflake.from_lease(lease)
    static = Snowflake(worker_id=3)
    parent_worker = gen.worker_id
    out = tmp_path / "child"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            child_worker = gen.worker_id
            gen.next_id()
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
