"""Real concurrency, real Redis: exact counts across threads and processes, skewed clocks, outages, dynamic rates."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time

import pytest
import redis

from distkit.errors import BackendUnavailableError, RateLimitExceeded
from distkit.ratelimit import (
    AsyncRedisBackend,
    FailurePolicy,
    FixedWindow,
    Rate,
    RedisBackend,
    SlidingWindowLog,
    TokenBucket,
    qps_limit,
)
from tests.ratelimit._workers import hammer, make, set_rate_then_exit


def _run_processes(target_args, n):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(n + 1)  # the children and this test: nobody starts before everyone is ready
    procs = [ctx.Process(target=hammer, args=(*target_args(i), start)) for i in range(n)]
    for p in procs:
        p.start()
    return start, procs


@pytest.mark.parametrize("algo", ["token", "leaky", "fixed", "log", "counter"])
def test_two_hundred_concurrent_first_hits_allow_exactly_five(algo, redis_url, namespace, tmp_path):
    key = f"flash-sale-{algo}"
    start, procs = _run_processes(
        lambda i: (
            redis_url,
            namespace,
            algo,
            key,
            25,
            1,
            0,
            str(tmp_path / f"p{i}"),
        ),
        4,
    )  # 4 processes x 25 threads
    limiter = make("redis", redis_url, namespace, algo)
    results: list[bool] = []
    barrier = threading.Barrier(100)

    def hit() -> None:
        barrier.wait()
        results.append(limiter.acquire(key).allowed)

    threads = [threading.Thread(target=hit) for _ in range(100)]
    if algo == "fixed":  # a calendar window allows 5 more right after its boundary (documented): start clear of it
        _start_clear_of_a_minute_boundary(redis.Redis.from_url(redis_url), margin_s=5.0)
    start.wait(60)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    total = sum(results) + sum(int((tmp_path / f"p{i}").read_text().split()[0]) for i in range(4))
    assert total == 5


def _start_clear_of_a_minute_boundary(client: redis.Redis, margin_s: float) -> None:
    """Return at least ``margin_s`` before the next boundary of a 60 s window, on the server's clock (the one
    the limiter uses): if the current window ends sooner, wait until it has ended."""
    seconds, micros = client.time()
    left = 60 - (seconds % 60 + micros / 1e6)
    if left < margin_s:
        time.sleep(left + 0.05)
    client.close()


def test_four_processes_times_eight_threads_for_five_seconds_stay_in_bounds(redis_url, namespace, tmp_path):
    start, procs = _run_processes(
        lambda i: (redis_url, namespace, "token100", "api", 8, 0, 5.0, str(tmp_path / f"p{i}")), 4
    )
    start.wait(60)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    runs = [(tmp_path / f"p{i}").read_text().split() for i in range(4)]
    allowed = sum(int(r[0]) for r in runs)
    span = max(float(r[2]) for r in runs) - min(float(r[1]) for r in runs)  # the real window, >= 5 s
    assert 498 <= allowed <= 20 + 100 * span + 1  # never more than burst + rate x elapsed (exact GCRA)


def test_clients_with_skewed_clocks_share_one_limit(redis_client, namespace, monkeypatch):
    real_ns, real_time = time.time_ns, time.time
    lim = SlidingWindowLog(Rate(5, per_s=10), backend=RedisBackend(redis_client, prefix=namespace))
    results = []
    for skew_s in (30, -30, 30, -30, 30, -30, 30, -30):
        monkeypatch.setattr(time, "time_ns", lambda s=skew_s: real_ns() + s * 1_000_000_000)
        monkeypatch.setattr(time, "time", lambda s=skew_s: real_time() + s)
        results.append(lim.acquire("shared").allowed)
    assert results == [True] * 5 + [False] * 3  # Redis TIME decides, not the clients' clocks


@pytest.mark.parametrize("policy", list(FailurePolicy))
def test_redis_stopped_mid_test_follows_the_failure_policy(policy, private_redis):
    client = redis.Redis.from_url(private_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    lim = FixedWindow(Rate(3, per_s=60), backend=RedisBackend(client, prefix="rl"), on_backend_error=policy)
    assert lim.acquire("k").allowed and lim.acquire("k").remaining == 1
    private_redis.stop()
    if policy is FailurePolicy.RAISE:
        with pytest.raises(BackendUnavailableError):
            lim.acquire("k")
        return
    ds = [lim.acquire("k") for _ in range(5)]  # no exception leaks
    if policy is FailurePolicy.FAIL_OPEN:
        assert all(d.allowed and d.fallback == "fail_open" for d in ds)
    elif policy is FailurePolicy.FAIL_CLOSED:
        assert not any(d.allowed for d in ds) and ds[0].fallback == "fail_closed"
    else:  # a per-process limiter of the same shape takes over
        assert [d.allowed for d in ds] == [True, True, True, False, False]
        assert ds[0].fallback == "local_fallback"
    private_redis.start()
    # back on Redis by itself, once the outage breaker's back-off interval (at most 5 s) lets a probe through
    deadline = time.monotonic() + 6
    while lim.acquire("k").fallback != "":
        assert time.monotonic() < deadline, "still on the failure policy 6 s after Redis came back"
        time.sleep(0.02)


def test_set_rate_in_one_process_is_seen_by_another_within_a_second(redis_client, redis_url, namespace):
    # hour windows: a window edge cannot fall inside the test
    lim = FixedWindow(Rate(2, per_s=3600), backend=RedisBackend(redis_client, prefix=namespace), name="checkout")
    assert [lim.acquire("k").allowed for _ in range(3)] == [True, True, False]
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=set_rate_then_exit, args=(redis_url, namespace, "checkout"))
    p.start()
    p.join(30)
    changed_at = time.monotonic()
    while not lim.acquire("k").allowed:
        assert time.monotonic() - changed_at < 1.2
        time.sleep(0.05)
    assert lim.rate == Rate(6, per_s=3600) and lim.limit == 6
    assert 0 < redis_client.ttl(f"{{{namespace}:__rate__:checkout}}")  # even config keys expire


def test_every_key_has_a_ttl(redis_client, namespace):
    from distkit.ratelimit import LeakyBucket, SlidingWindowCounter

    backend = RedisBackend(redis_client, prefix=namespace)
    for lim in (
        TokenBucket(Rate(5), backend=backend),
        LeakyBucket(Rate(5), capacity=3, backend=backend),
        FixedWindow(Rate(5), backend=backend),
        SlidingWindowLog(Rate(5), backend=backend),
        SlidingWindowCounter(Rate(5), backend=backend),
    ):
        lim.acquire("k")
    keys = list(redis_client.scan_iter(match=f"*{namespace}*"))
    assert len(keys) == 5
    assert all(0 < redis_client.pttl(k) <= 3_001 for k in keys)  # state lifetime (<= 2 periods) + 1 s slack


async def test_async_backend_and_decorator(async_redis_client, namespace):
    lim = TokenBucket(Rate(10, per_s=60), burst=2, backend=AsyncRedisBackend(async_redis_client, prefix=namespace))

    @qps_limit(lim, key=lambda user: user, fallback=lambda user: "cached page")
    async def page(user):
        await asyncio.sleep(0)
        return "fresh page"

    assert [await page("u1") for _ in range(3)] == ["fresh page", "fresh page", "cached page"]
    ds = await lim.acquire_many([("u2", 1), ("u2", 1), ("u2", 1)])
    assert [d.allowed for d in ds] == [True, True, False]
    with pytest.raises(RateLimitExceeded):
        await lim.wait("u2", timeout=0.1)


def test_closing_a_backend_releases_its_connections(redis_url, namespace):
    """After ``backend.close()`` and ``client.close()`` no connection of theirs is left on the server (whichever
    connections the Runner uses: the client's pool or a lane of its own), and the limiter still works after."""
    name = f"rl-close-{namespace}"
    client = redis.Redis.from_url(redis_url, client_name=name)
    watcher = redis.Redis.from_url(redis_url)
    backend = RedisBackend(client, prefix=namespace)
    lim = FixedWindow(Rate(5, per_s=60), backend=backend)

    def ours() -> int:
        return sum(1 for c in watcher.client_list() if c.get("name") == name)

    assert lim.acquire("k").remaining == 4
    assert ours() >= 1
    backend.close()
    client.close()
    deadline = time.monotonic() + 5  # the server notices closed sockets on its next event-loop turn
    while ours():
        assert time.monotonic() < deadline, f"{ours()} connection(s) named {name} still open on the server"
        time.sleep(0.01)
    assert lim.acquire("k").remaining == 3  # a later decision simply opens a new connection
    backend.close()
    client.close()
    for k in watcher.scan_iter(match=f"*{namespace}*"):
        watcher.delete(k)
    watcher.close()


def test_sync_decorator_and_wait(redis_client, namespace):
    lim = TokenBucket(Rate(20, per_s=1.0), burst=1, backend=RedisBackend(redis_client, prefix=namespace))

    @qps_limit(lim, key="global")
    def handle():
        return "ok"

    assert handle() == "ok"
    with pytest.raises(RateLimitExceeded) as exc:
        handle()
    assert exc.value.decision.retry_after_s > 0
    t0 = time.monotonic()
    assert lim.wait("global", timeout=2.0).allowed  # blocks ~50 ms for the next token
    assert time.monotonic() - t0 < 1.0
