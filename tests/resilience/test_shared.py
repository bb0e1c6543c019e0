"""Shared breakers: one window and one probe budget across breakers/processes; Redis outages fall back locally."""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest
import redis

from distkit.errors import BreakerOpenError
from distkit.resilience import CircuitBreaker, RedisBreakerStore, State
from tests.fakeclock import FakeClock
from tests.resilience._workers import shared_worker


class Boom(Exception):
    pass


def breaker(store, clock: FakeClock, **kw) -> CircuitBreaker:
    opts = {"failure_rate": 0.5, "window_s": 10, "minimum_calls": 10, "open_s": 5, "half_open_calls": 3}
    opts.update(kw)
    return CircuitBreaker("pay", store=store, clock=clock, **opts)


def fail(b: CircuitBreaker, n: int = 1) -> None:
    @b
    def f() -> None:
        raise Boom()

    for _ in range(n):
        with pytest.raises((Boom, BreakerOpenError)):
            f()


def test_two_breakers_trip_on_their_combined_window(make_store, fake_clock):
    store = make_store()
    a, b = breaker(store, fake_clock), breaker(store, fake_clock)
    fail(a, 5)
    a.flush()
    assert a.state is State.CLOSED  # 5 calls < minimum_calls
    fail(b, 4)
    assert b.state is State.CLOSED
    b.flush()  # store: 9 calls. b judges its 4 + a's 5
    fail(b, 1)  # 10 calls in the shared window, all failed: b trips locally at once
    assert b.state is State.OPEN
    b.flush()  # ... and tells the store
    a.flush()
    assert a.state is State.OPEN
    assert a.metrics().shared and a.metrics().store_healthy


def test_store_trips_even_if_no_single_breaker_saw_enough(make_store, fake_clock):
    store = make_store()
    a, b = breaker(store, fake_clock), breaker(store, fake_clock)
    fail(a, 5)
    fail(b, 5)  # neither has synced: each sees 5 < 10
    a.flush()
    b.flush()  # the store now holds 10 failed calls: it trips and b adopts OPEN
    assert b.state is State.OPEN
    a.flush()
    assert a.state is State.OPEN


def test_half_open_budget_is_global_and_probes_close_it(make_store, fake_clock):
    store = make_store()
    bs = [breaker(store, fake_clock, minimum_calls=2) for _ in range(4)]
    fail(bs[0], 2)
    bs[0].flush()
    for x in bs:
        x.flush()
        assert x.state is State.OPEN
    fake_clock.advance(5_000)
    permits = []
    for _ in range(3):
        for x in bs:
            try:
                permits.append((x, x._admit()))
            except BreakerOpenError as exc:
                assert exc.state in ("HALF_OPEN", "OPEN")
    assert len(permits) == 3  # exactly half_open_calls across the four breakers
    for x, p in permits:
        x._finish(p, fake_clock(), False, False)
    for x in bs:
        x.flush()
        assert x.state is State.CLOSED


def test_failed_probes_reopen_everywhere(make_store, fake_clock):
    store = make_store()
    a = breaker(store, fake_clock, minimum_calls=1, half_open_calls=2)
    b = breaker(store, fake_clock, minimum_calls=1, half_open_calls=2)
    fail(a, 1)
    a.flush()
    b.flush()
    fake_clock.advance(5_000)
    fail(a, 1)  # probe 1 of 2
    fail(b, 1)  # probe 2 of 2: 2/2 failed -> OPEN
    assert b.state is State.OPEN
    a.flush()
    assert a.state is State.OPEN
    fail(a, 1)
    assert a.metrics().not_permitted_calls >= 1


def test_force_open_and_reset_are_shared(make_store, fake_clock):
    store = make_store()
    a, b = breaker(store, fake_clock), breaker(store, fake_clock)
    a.force_open()
    b.flush()
    assert b.state is State.OPEN and b.metrics().forced
    fake_clock.advance(600_000)
    b.flush()
    assert b.state is State.OPEN
    b.reset()
    a.flush()
    assert a.state is State.CLOSED and not a.metrics().forced


def test_redis_keys_have_a_ttl_and_one_slot(redis_client, namespace, fake_clock):
    store = RedisBreakerStore(redis_client, prefix=namespace, flush_s=None, clock=fake_clock)
    b = breaker(store, fake_clock)
    fail(b, 3)
    b.flush()
    keys = list(redis_client.scan_iter(match=f"*{namespace}*"))
    assert keys == [f"{{{namespace}:pay}}".encode()]
    assert 0 < redis_client.pttl(keys[0]) <= 2 * 10_000 + 5_000 + 30_000 + 60_000
    store.close()


def test_redis_cluster(redis_cluster, namespace, fake_clock):
    store = RedisBreakerStore(redis_cluster, prefix=namespace, flush_s=None, clock=fake_clock)
    a, b = breaker(store, fake_clock, minimum_calls=4), breaker(store, fake_clock, minimum_calls=4)
    fail(a, 2)
    a.flush()
    fail(b, 2)
    b.flush()
    a.flush()
    assert a.state is State.OPEN and b.state is State.OPEN
    store.close()


def test_redis_killed_falls_back_to_local_statistics(private_redis, namespace, fake_clock):
    client = redis.Redis.from_url(private_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    store = RedisBreakerStore(client, prefix=namespace, flush_s=None, clock=fake_clock)
    b = breaker(store, fake_clock, minimum_calls=4, half_open_calls=2)
    assert b.call(lambda: 1) == 1
    b.flush()
    assert b.metrics().store_healthy
    private_redis.stop()
    b.flush()  # no error: the breaker notes the outage
    assert not b.metrics().store_healthy
    assert b.call(lambda: 2) == 2  # calls go on
    fail(b, 3)  # local window: 2 ok + 3 failed... 5 calls, 3/5 >= 0.5
    assert b.state is State.OPEN
    with pytest.raises(BreakerOpenError):
        b.call(lambda: 3)
    fake_clock.advance(5_000)
    got = []
    for _ in range(4):
        try:
            got.append(b._admit())
        except BreakerOpenError:
            got.append(None)
    assert sum(p is not None for p in got) == 2  # the local probe budget
    for p in got[:2]:
        b._finish(p, fake_clock(), False, False)
    assert b.state is State.CLOSED
    private_redis.start()
    b.flush()
    assert b.metrics().store_healthy
    store.close()
    client.close()


def test_redis_dies_while_half_open(private_redis, namespace, fake_clock):
    client = redis.Redis.from_url(private_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    store = RedisBreakerStore(client, prefix=namespace, flush_s=None, clock=fake_clock)
    b = breaker(store, fake_clock, minimum_calls=1, half_open_calls=1)
    fail(b, 1)
    b.flush()
    fake_clock.advance(5_000)
    private_redis.stop()
    assert b.call(lambda: "probe") == "probe"  # the store is gone: a local probe, no error
    assert b.state is State.CLOSED
    store.close()
    client.close()


@pytest.mark.slow
def test_four_processes_trip_together_and_share_the_probe_budget(redis_url, redis_client, namespace, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    outs = [str(tmp_path / f"w{i}.json") for i in range(4)]
    procs = [ctx.Process(target=shared_worker, args=(redis_url, namespace, i, 4, outs[i], start)) for i in range(4)]
    for p in procs:
        p.start()
    start.set()
    deadline = time.monotonic() + 60
    while int(redis_client.get(f"{namespace}:ran") or 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert int(redis_client.get(f"{namespace}:ran") or 0) == 3
    time.sleep(0.5)  # the 16 threads keep trying meanwhile; every one of them must be refused
    assert int(redis_client.get(f"{namespace}:ran") or 0) == 3
    redis_client.set(f"{namespace}:stop", 1, ex=120)
    redis_client.rpush(f"{namespace}:go", 1, 1, 1)
    redis_client.expire(f"{namespace}:go", 120)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = [json.load(open(o)) for o in outs]
    assert sum(r["ran"] for r in results) == 3  # HALF_OPEN probes across all processes == half_open_calls
    assert all(r["rejected_half_open"] > 0 for r in results)  # every process tried and was refused
    # each process's trip: its first move out of CLOSED (a process that heard late may go straight to HALF_OPEN)
    opened = [min(t for f, to, t in r["events"] if f == "CLOSED") for r in results]
    assert max(opened) - min(opened) < 4.0  # every process tripped within one window (window_s=4)
    # the three failed probes were all judged globally: the shared state went back to OPEN
    assert redis_client.hget(f"{{{namespace}:dep}}", "st") == b"1"


async def test_async_function_with_a_shared_breaker(redis_client, namespace, fake_clock):
    store = RedisBreakerStore(redis_client, prefix=namespace, flush_s=None, clock=fake_clock)
    a, b = breaker(store, fake_clock, minimum_calls=2, half_open_calls=1), breaker(
        store, fake_clock, minimum_calls=2, half_open_calls=1
    )
    ran = []

    async def dep(x: int) -> int:
        ran.append(x)
        if x < 0:
            raise Boom()
        return x

    fa, fb = a(dep), b(dep)
    for _ in range(2):
        with pytest.raises(Boom):
            await fa(-1)
    assert a.state is State.OPEN
    a.flush()
    b.flush()
    with pytest.raises(BreakerOpenError):
        await fb(1)
    fake_clock.advance(5_000)
    assert await fb(2) == 2  # the one global probe (asked off the event loop)
    assert b.state is State.CLOSED
    assert await fa(3) == 3  # a asks the store for a probe and learns it closed
    a.flush()
    assert a.state is State.CLOSED and await fa(4) == 4
    assert ran == [-1, -1, 2, 3, 4]
    store.close()


@pytest.mark.slow
def test_fork_child_gets_its_own_flusher(redis_url, redis_client, namespace):
    import os

    store = RedisBreakerStore(redis.Redis.from_url(redis_url), prefix=namespace, flush_s=0.05)
    b = CircuitBreaker("forked", minimum_calls=4, failure_rate=0.5, store=store)
    assert b.call(lambda: 1) == 1
    pid = os.fork()
    if pid == 0:  # child: two failures and two successes, never enough locally before its flusher shares them
        code = 1
        try:
            for x in (1, 2):
                b.call(lambda: x)
            deadline = time.monotonic() + 10
            while b._sent[0] < 3 and time.monotonic() < deadline:  # the child's own flusher thread sends them
                time.sleep(0.01)
            code = 0 if b._sent[0] == 3 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    deadline = time.monotonic() + 10
    calls = 0
    while time.monotonic() < deadline:
        b.flush()
        calls = b.metrics().calls
        if calls >= 3:
            break
        time.sleep(0.02)
    assert calls >= 3  # the parent's call and the child's two reached the shared window
    b.close()
    store.close()


def test_one_breaker_holding_several_global_probes_reports_each(make_store, fake_clock):
    store = make_store()
    a, b = breaker(store, fake_clock, minimum_calls=1, half_open_calls=3), breaker(
        store, fake_clock, minimum_calls=1, half_open_calls=3
    )
    fail(a, 1)
    a.flush()
    b.flush()
    fake_clock.advance(5_000)
    p1, p2 = a._admit(), a._admit()  # two probes under one local permit (two threads of one process)
    p3 = b._admit()
    with pytest.raises(BreakerOpenError):
        b._admit()
    a._finish(p1, fake_clock(), False, False)
    a._finish(p2, fake_clock(), False, False)
    assert a.state is State.HALF_OPEN
    b._finish(p3, fake_clock(), True, False)  # 1 of 3 failed < 0.5: every result reached the store -> CLOSED
    assert b.state is State.CLOSED
    a.flush()
    assert a.state is State.CLOSED


def test_a_probe_holder_that_dies_does_not_wedge_half_open(make_store, fake_clock):
    store = make_store()
    a = breaker(store, fake_clock, minimum_calls=1, half_open_calls=1, half_open_max_s=2)
    b = breaker(store, fake_clock, minimum_calls=1, half_open_calls=1, half_open_max_s=2)
    fail(a, 1)
    a.flush()
    b.flush()
    fake_clock.advance(5_000)
    a._admit()  # a takes the only probe and is SIGKILLed: it never reports
    with pytest.raises(BreakerOpenError):
        b._admit()
    fake_clock.advance(2_000)  # half_open_max_s: the store re-opens ...
    b.flush()
    assert b.state is State.OPEN
    fake_clock.advance(5_000)  # ... and after open_s grants a fresh probe
    assert b.call(lambda: "ok") == "ok"
    assert b.state is State.CLOSED


def test_unicode_names_and_prefixes(redis_client, namespace, fake_clock):
    store = RedisBreakerStore(redis_client, prefix=f"{namespace}-支付", flush_s=None, clock=fake_clock)
    a = CircuitBreaker("支付-api ✓", minimum_calls=1, store=store, clock=fake_clock)
    b = CircuitBreaker("支付-api ✓", minimum_calls=1, store=store, clock=fake_clock)
    fail(a, 1)
    a.flush()
    b.flush()
    assert b.state is State.OPEN
    assert redis_client.pttl(f"{{{namespace}-支付:支付-api ✓}}".encode()) > 0
    store.close()


def test_a_frozen_redis_never_blocks_closed_calls(private_redis, namespace):
    """SIGSTOP the store's Redis: the flusher thread waits for its socket timeout, the calls never do."""
    import os
    import signal

    client = redis.Redis.from_url(private_redis.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    store = RedisBreakerStore(client, prefix=namespace, flush_s=0.02)
    b = CircuitBreaker("frozen", minimum_calls=10**6, store=store)
    f = b(lambda: 1)
    f()
    os.kill(private_redis.proc.pid, signal.SIGSTOP)
    try:
        worst = 0.0
        deadline = time.monotonic() + 1.5  # spans several flush attempts and socket timeouts
        n = 0
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            f()
            worst = max(worst, time.monotonic() - t0)
            n += 1
        assert worst < 0.5, worst  # a call waiting on Redis would take the 1 s socket timeout
        deadline = time.monotonic() + 5
        while b.metrics().store_healthy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not b.metrics().store_healthy  # the flusher noticed, quietly
        assert b.metrics().calls == n + 1
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    b.close()
    store.close()
    client.close()


def test_idle_breakers_flush_rarely_busy_ones_at_once(redis_client, namespace):
    store = RedisBreakerStore(redis_client, prefix=namespace, flush_s=0.02)
    b = CircuitBreaker("idle", minimum_calls=100, open_s=30, store=store)  # idle rounds: one per second
    flushes: list[int] = []
    real = store.flush

    def counting(*args):
        view = real(*args)
        flushes.append(args[2][0])  # the calls it sent
        return view

    store.flush = counting  # type: ignore[method-assign]
    time.sleep(0.6)  # ~30 flusher rounds, nothing to say: one flush (the first), not thirty
    assert len(flushes) <= 2
    before = len(flushes)
    b.call(lambda: 1)
    deadline = time.monotonic() + 5
    while len(flushes) == before and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(flushes) > before  # a call is flushed at the next round, not after the idle second
    assert sum(flushes) == 1
    b.close()
    store.close()
