"""Issue 16 §1: with a DEFAULT redis-py client (``redis.Redis(host, port)``: 10 retries with backoff, 5 s socket
timeouts) every call returns or raises within its deadline + 250 ms, against a killed Redis, a black-holed one
(accepts, never answers), and one whose connects hang; the breaker then makes failures cost microseconds.

The Runner itself is tested first; then the public API of each primitive. Those primitives are being moved onto
the Runner on other branches: cases that fail here only because the module does not use the Runner yet are
marked ``xfail(strict=False)`` (the lead removes the marks after merging)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from distkit._redis import AsyncRunner, CircuitOpenError, Runner, Script
from distkit.errors import BackendUnavailableError
from tests import faults
from tests.faults import BlackHole, HangingConnect

black_hole = faults.black_hole  # the fixture

SLACK = 0.25
COUNT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def inline(source: str) -> Script:
    script = Script.__new__(Script)
    script.name, script.source = "test/count", source
    script.sha = hashlib.sha1(source.encode()).hexdigest()
    return script


@pytest.fixture(params=["killed", "black_hole", "hanging_connect"])
def outage(request: Any, private_redis: Any) -> Iterator[tuple[str, int]]:
    """(kind, port) of a Redis that is down in one of three ways."""
    if request.param == "killed":
        private_redis.proc.kill()  # SIGKILL: no goodbye on the sockets
        private_redis.proc.wait()
        private_redis.proc = None
        yield "killed", private_redis.port
    elif request.param == "black_hole":
        hole = BlackHole()
        yield "black_hole", hole.port
        hole.close()
    else:
        hang = HangingConnect()
        yield "hanging_connect", hang.port
        hang.close()


def default_client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port)  # redis-py's defaults: retries with backoff, 5 s timeouts


def bounded(fn: Callable[[], Any], bound_s: float) -> tuple[float, Any]:
    """Run ``fn`` in a thread; (elapsed, result or exception). Fails as soon as ``bound_s`` + SLACK passes (a
    stuck call does not hold the test for its full length; the thread is left to finish in the background)."""
    out: list[Any] = []

    def run() -> None:
        t0 = time.monotonic()
        try:
            res: Any = fn()
        except BaseException as exc:
            res = exc
        out.append((time.monotonic() - t0, res))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(bound_s + SLACK + 0.5)
    assert out, f"still running {bound_s + SLACK + 0.5:.2f} s later (bound {bound_s} s + {SLACK} s)"
    elapsed, res = out[0]
    assert elapsed <= bound_s + SLACK, f"took {elapsed:.3f} s, bound {bound_s} s + {SLACK} s ({res!r})"
    return elapsed, res


# --------------------------------------------------------------------------- the Runner


def test_every_runner_call_is_bounded_and_the_breaker_makes_the_rest_fast(outage):
    kind, port = outage
    runner, script = Runner(default_client(port)), inline(COUNT)
    runner.breaker.configure(base_s=30, cap_s=30)  # no probe during the fast-failure part
    ops: list[Callable[[float], Any]] = [
        lambda d: runner(script, ["n"], [1], deadline=d),
        lambda d: runner.many(script, [(["n"], [1])] * 3, deadline=d),
        lambda d: runner.command("GET", "n", deadline=d),
    ]
    for i in range(6):  # until the breaker opens: each call bounded by its own deadline
        deadline_s = 0.4
        _, res = bounded(lambda i=i: ops[i % 3](time.monotonic() + deadline_s), deadline_s)
        assert isinstance(res, BackendUnavailableError) and isinstance(res, redis.ConnectionError), (kind, res)
    assert runner.breaker.is_open
    t0 = time.perf_counter()
    for i in range(300):
        with pytest.raises(CircuitOpenError):
            ops[i % 3](time.monotonic() + 5)
    assert time.perf_counter() - t0 < 0.5  # microseconds each


def test_sixteen_threads_against_a_black_hole_all_return_by_their_deadline(black_hole):
    runner, script = Runner(default_client(black_hole.port)), inline(COUNT)
    start, results = threading.Barrier(16), []

    def work() -> None:
        start.wait()
        t0 = time.monotonic()
        try:
            runner(script, ["n"], [1], deadline=t0 + 0.5)
        except BackendUnavailableError as exc:
            results.append((time.monotonic() - t0, exc))

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(results) == 16
    assert max(e for e, _ in results) <= 0.5 + SLACK


async def test_async_runner_calls_are_bounded(outage):
    kind, port = outage
    client = aredis.Redis(host="127.0.0.1", port=port)
    runner, script = AsyncRunner(client), inline(COUNT)
    runner.breaker.configure(base_s=30, cap_s=30)
    for i in range(5):
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailableError):
            if i % 2:
                await runner(script, ["n"], [1], deadline=t0 + 0.4)
            else:
                await runner.command("GET", "n", deadline=t0 + 0.4)
        assert time.monotonic() - t0 <= 0.4 + SLACK, kind
    assert runner.breaker.is_open
    t0 = time.perf_counter()
    for _ in range(300):
        with pytest.raises(CircuitOpenError):
            await runner(script, ["n"], [1])
    assert time.perf_counter() - t0 < 0.5
    await client.aclose()


def test_the_default_deadline_is_timeout_s(black_hole):
    runner = Runner(default_client(black_hole.port), timeout_s=0.3)
    _, res = bounded(lambda: runner.command("PING"), 0.3)
    assert isinstance(res, BackendUnavailableError)


# --------------------------------------------------------------------------- each primitive's public API

NOT_ON_RUNNER = "the module does not run its Redis calls through distkit._redis.Runner yet (other branch)"


@pytest.fixture(params=["killed", "black_hole"])
def down_port(request: Any, private_redis: Any) -> Iterator[int]:
    if request.param == "killed":
        private_redis.proc.kill()
        private_redis.proc.wait()
        private_redis.proc = None
        yield private_redis.port
    else:
        hole = BlackHole()
        yield hole.port
        hole.close()


@pytest.mark.slow
def test_lock_acquire_with_timeout_1_is_bounded(down_port):
    from distkit.locks import Locks

    locks = Locks(default_client(down_port), namespace=f"t-{uuid.uuid4().hex[:6]}")
    try:
        _, res = bounded(lambda: locks.lock("job").acquire(timeout=1), 1.0)
        assert res is False or isinstance(res, BackendUnavailableError), res
    finally:
        threading.Thread(target=locks.close, daemon=True).start()


@pytest.mark.slow
def test_fail_open_token_bucket_decisions_are_bounded_then_fast(down_port):
    from distkit.ratelimit import FailurePolicy, Rate, RedisBackend, TokenBucket

    limiter = TokenBucket(
        Rate(10, per_s=1),
        backend=RedisBackend(default_client(down_port), prefix=f"t-{uuid.uuid4().hex[:6]}"),
        on_backend_error=FailurePolicy.FAIL_OPEN,
    )
    for _ in range(4):  # a FAIL_OPEN decision must never wait long: availability first
        _, res = bounded(lambda: limiter.acquire("k"), 1.0)
        assert not isinstance(res, BaseException) and res.allowed, res
    _, res = bounded(lambda: [limiter.acquire("k") for _ in range(200)], 0.25)  # breaker open: microseconds
    assert not isinstance(res, BaseException) and all(d.allowed for d in res)


@pytest.mark.slow
def test_idempotent_call_is_bounded(down_port):
    from distkit.idempotency import RedisIdempotencyStore, idempotent

    store = RedisIdempotencyStore(default_client(down_port), prefix=f"t-{uuid.uuid4().hex[:6]}")

    @idempotent(store, key="order_id")
    def charge(order_id: str) -> str:
        return order_id

    _, res = bounded(lambda: charge("o-1"), 5.0)  # the Runner's documented default deadline
    assert isinstance(res, BackendUnavailableError), res


@pytest.mark.slow
def test_worker_lease_acquire_is_bounded(down_port):
    from distkit.idgen import RedisWorkerLease

    ns = f"t-{uuid.uuid4().hex[:6]}"
    lease = RedisWorkerLease(default_client(down_port), namespace=ns, ttl_s=2, max_worker_id=31)
    _, res = bounded(lease.acquire, 2.0)  # one lease length
    assert isinstance(res, BackendUnavailableError), res
    threading.Thread(target=lease.close, daemon=True).start()


def test_asyncio_event_loop_is_never_blocked_by_an_outage(black_hole):
    async def main() -> float:
        client = aredis.Redis(host="127.0.0.1", port=black_hole.port)
        runner = AsyncRunner(client)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick = asyncio.create_task(ticker())
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailableError):
            await runner.command("PING", deadline=t0 + 0.5)
        elapsed = time.monotonic() - t0
        tick.cancel()
        assert ticks >= 10  # the loop kept running while the call waited
        await client.aclose()
        return elapsed

    assert asyncio.run(main()) <= 0.5 + SLACK
