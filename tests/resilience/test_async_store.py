"""AsyncRedisBreakerStore: the asyncio twin shares windows and the probe budget the same way."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aredis

from distkit.errors import BreakerOpenError, InvalidArgumentError
from distkit.resilience import AsyncRedisBreakerStore, CircuitBreaker, RedisBreakerStore, State


class Boom(Exception):
    pass


def make(store, clock=None, **kw) -> CircuitBreaker:
    opts = {"failure_rate": 0.5, "minimum_calls": 4, "open_s": 5, "half_open_calls": 2}
    opts.update(kw)
    return CircuitBreaker("async-dep", store=store, clock=clock, **opts)


async def dep(x: int) -> int:
    if x < 0:
        raise Boom()
    return x


async def test_shared_window_and_global_probes(async_redis_client, namespace, fake_clock):
    store = AsyncRedisBreakerStore(async_redis_client, prefix=namespace, flush_s=None, clock=fake_clock)
    a, b, c = (make(store, fake_clock) for _ in range(3))
    fa, fb = a(dep), b(dep)
    for f in (fa, fb):
        for _ in range(2):
            with pytest.raises(Boom):
                await f(-1)
    await a.aflush()
    await b.aflush()  # 4 failed calls in the shared window: the store trips
    assert b.state is State.OPEN
    await a.aflush()
    await c.aflush()
    assert a.state is State.OPEN and c.state is State.OPEN
    fake_clock.advance(5_000)
    held = asyncio.Event()
    entered = []

    async def slow_dep(x: int) -> int:
        entered.append(x)
        await held.wait()
        return x

    calls = [x(slow_dep) for x in (a, b, c, a, b, c)]

    async def one(f) -> int | None:
        try:
            return await f(1)
        except BreakerOpenError:
            return None

    tasks = [asyncio.create_task(one(f)) for f in calls]
    deadline = time.monotonic() + 10
    while sum(t.done() for t in tasks) < 4 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(entered) == 2  # exactly half_open_calls probes across the three breakers; 4 refused
    held.set()
    results = await asyncio.gather(*tasks)
    assert results.count(1) == 2 and results.count(None) == 4
    for x in (a, b, c):
        await x.aflush()
        assert x.state is State.CLOSED
    await store.aclose()


async def test_force_open_reset_and_sync_callers(async_redis_client, namespace, fake_clock):
    store = AsyncRedisBreakerStore(async_redis_client, prefix=namespace, flush_s=None, clock=fake_clock)
    a, b = make(store, fake_clock), make(store, fake_clock)
    await a.aforce_open()
    await b.aflush()
    assert b.state is State.OPEN and b.metrics().forced
    b.reset()  # a sync call on an asyncio store: applied here, sent with the next aflush
    assert b.state is State.CLOSED
    await b.aflush()
    await a.aflush()
    assert a.state is State.CLOSED
    with pytest.raises(TypeError):
        a.flush()
    with pytest.raises(TypeError):
        store.close()
    assert a.call(lambda: 3) == 3  # sync functions work too (local probes when HALF_OPEN)
    await store.aclose()


async def test_flusher_task_spreads_a_trip(async_redis_client, namespace):
    async with AsyncRedisBreakerStore(async_redis_client, prefix=namespace, flush_s=0.05) as store:
        a, b = make(store, minimum_calls=3), make(store, minimum_calls=3)
        fa = a(dep)
        for _ in range(3):
            with pytest.raises(Boom):
                await fa(-1)
        assert a.state is State.OPEN
        deadline = time.monotonic() + 10
        while b.state is not State.OPEN and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert b.state is State.OPEN  # learned from the store by the flusher task


async def test_redis_killed_async(private_redis, namespace, fake_clock):
    client = aredis.Redis.from_url(private_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    store = AsyncRedisBreakerStore(client, prefix=namespace, flush_s=None, clock=fake_clock)
    a = make(store, fake_clock, minimum_calls=3, half_open_calls=1)
    fa = a(dep)
    assert await fa(1) == 1
    await a.aflush()
    private_redis.stop()
    await a.aflush()  # no error
    assert not a.metrics().store_healthy
    for _ in range(2):
        with pytest.raises(Boom):
            await fa(-1)
    assert a.state is State.OPEN  # 2/3 failed, locally
    fake_clock.advance(5_000)
    assert await fa(2) == 2  # a local probe
    assert a.state is State.CLOSED
    private_redis.start()
    await a.aflush()
    assert a.metrics().store_healthy
    await store.aclose()
    await client.aclose()


async def test_client_kinds_are_checked(async_redis_client, redis_client):
    with pytest.raises(InvalidArgumentError):
        AsyncRedisBreakerStore(redis_client)
    with pytest.raises(InvalidArgumentError):
        RedisBreakerStore(async_redis_client)
