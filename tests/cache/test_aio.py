"""AsyncHotKeyCache (redis.asyncio) against the shared Redis: the same guarantees as the sync cache, and both
kinds of cache interoperating on one namespace."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from typing import Any

import pytest

from distkit.cache import AsyncHotKeyCache, HotKeyCache
from distkit.errors import CacheLoadTimeoutError

ctx = multiprocessing.get_context("fork")


@pytest.fixture
async def amake(async_redis_client: Any, namespace: str) -> Any:
    made: list[AsyncHotKeyCache] = []

    def make(**kwargs: Any) -> AsyncHotKeyCache:
        kwargs.setdefault("namespace", namespace)
        cache = AsyncHotKeyCache(async_redis_client, **kwargs)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.aclose()


async def test_levels_null_set_invalidate_and_decorator(amake: Any) -> None:
    calls: list[str] = []

    async def loader(key: str) -> Any:
        calls.append(key)
        return None if key.startswith("missing") else {"key": key}

    cache = amake(loader=loader)
    assert await cache.get("a") == {"key": "a"} and await cache.get("a") == {"key": "a"}
    assert await amake(loader=loader).get("a") == {"key": "a"}  # from L2
    assert [await cache.get("missing:1") for _ in range(5)] == [None] * 5
    assert calls == ["a", "missing:1"]
    await cache.set("a", [1, "ü"])
    assert await cache.get("a") == [1, "ü"]
    await cache.invalidate("a")
    assert await cache.get("a") == {"key": "a"} and calls == ["a", "missing:1", "a"]

    @cache.cached(key=lambda n: f"n:{n}")
    async def load_n(n: int) -> int:
        await asyncio.sleep(0.02)
        calls.append(f"n{n}")
        return n * 2

    assert await asyncio.gather(*(load_n(3) for _ in range(50))) == [6] * 50
    assert calls.count("n3") == 1

    @cache.cached(key=lambda n: f"sync:{n}")
    def load_sync(n: int) -> int:  # a plain function runs on a worker thread
        calls.append(f"s{n}")
        return n

    assert await load_sync(4) == 4 and await load_sync(4) == 4 and calls.count("s4") == 1


def _async_stampede_child(url: str, ns: str, barrier: Any, out: Any, done: Any, stale: bool) -> None:
    import redis.asyncio as aredis

    async def main() -> None:
        client = aredis.Redis.from_url(url)

        async def loader(key: str) -> str:
            await client.incr(f"{{{ns}:loads}}")
            await client.pexpire(f"{{{ns}:loads}}", 60_000)
            if stale:
                deadline = time.monotonic() + 20
                while not await client.exists(f"{{{ns}:release}}") and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
            else:
                await asyncio.sleep(0.3)
            return "new"

        cache = AsyncHotKeyCache(client, namespace=ns, loader=loader, ttl_s=60, load_timeout_s=(0.1, 25.0))
        await asyncio.to_thread(barrier.wait, 30)
        results = await asyncio.gather(*(cache.get("hot") for _ in range(100)), return_exceptions=True)
        out.put([r if isinstance(r, str) else repr(r) for r in results])
        deadline = time.monotonic() + 25
        while await cache.get("hot") != "new" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        done.put((await cache.get("hot"), cache.stats.as_dict()))
        await cache.aclose()
        await client.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("stale", [True, False], ids=["expired", "cold"])
def test_200_concurrent_tasks_in_2_processes_load_once(redis_client: Any, redis_url: str, namespace: str,
                                                       stale: bool) -> None:
    if stale:
        seed = HotKeyCache(redis_client, namespace=namespace, ttl_s=0.05, jitter=0, backplane=False)
        seed.set("hot", "old")
        seed.close()
        time.sleep(0.1)
    barrier = ctx.Barrier(2)
    out, done = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_async_stampede_child, args=(redis_url, namespace, barrier, out, done, stale))
             for _ in range(2)]
    for p in procs:
        p.start()
    results = [r for _ in procs for r in out.get(timeout=60)]
    if stale:
        assert results == ["old"] * 200
        redis_client.set(f"{{{namespace}:release}}", 1, px=60_000)
    else:
        assert results == ["new"] * 200
    reports = [done.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert int(redis_client.get(f"{{{namespace}:loads}}")) == 1
    assert [r[0] for r in reports] == ["new", "new"]


async def test_fail_safe_soft_and_hard_timeouts(amake: Any, fake_clock: Any) -> None:
    state: dict[str, Any] = {"n": 0, "error": None, "delay": 0.0}

    async def loader(key: str) -> str:
        state["n"] += 1
        await asyncio.sleep(state["delay"])
        if state["error"]:
            raise state["error"]
        return f"v{state['n']}"

    cache = amake(loader=loader, ttl_s=10, jitter=0, stale_for_s=60, clock=fake_clock, load_timeout_s=(0.05, 0.5))
    assert await cache.get("k") == "v1"
    state["error"] = RuntimeError("db down")
    fake_clock.advance(11_000)
    assert await cache.get("k") == "v1" and cache.stats.fail_safe == 1  # fail-safe
    fake_clock.advance(60_000)
    with pytest.raises(RuntimeError, match="db down"):  # past stale_for_s
        await cache.get("k")
    state["error"] = None
    assert await cache.get("k") == "v4"
    fake_clock.advance(11_000)
    state["delay"] = 0.3
    t0 = time.monotonic()
    assert await cache.get("k") == "v4"  # soft timeout: stale now, the load finishes in the background
    assert time.monotonic() - t0 < 0.25
    deadline = time.monotonic() + 5
    while await cache.get("k") != "v5":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    state["delay"] = 2.0
    t0 = time.monotonic()
    with pytest.raises(CacheLoadTimeoutError):  # no stale value and slower than the hard timeout
        await cache.get("cold")
    assert time.monotonic() - t0 < 1.5


async def test_sync_and_async_caches_share_keys_and_backplane(amake: Any, make_cache: Any) -> None:
    acache = amake(loader=lambda k: "from-async-loader", local_ttl_s=30)
    scache = make_cache(loader=lambda k: "from-sync-loader", local_ttl_s=30)
    assert await acache.get("k") == "from-async-loader"
    assert scache.get("k") == "from-async-loader"  # one namespace, one envelope format
    scache.set("k", "by-sync")
    deadline = time.monotonic() + 2
    while await acache.get("k") != "by-sync":  # acache holds k in its L1 for 30 s: only the backplane helps
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    await acache.set("k", "by-async")
    deadline = time.monotonic() + 2
    while scache.get("k") != "by-async":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    assert acache.subscriptions == 1 and acache.connected.is_set()


async def test_killed_backplane_connection_resubscribes_and_clears_l1(private_redis: Any) -> None:
    import redis
    import redis.asyncio as aredis

    aclient = aredis.Redis.from_url(private_redis.url)
    admin = redis.Redis.from_url(private_redis.url)
    reader = AsyncHotKeyCache(aclient, namespace="t-akill", loader=lambda k: "db", local_ttl_s=2.0)
    writer = HotKeyCache(redis.Redis.from_url(private_redis.url), namespace="t-akill", backplane=False)
    try:
        writer.set("k", "v0")
        assert await reader.get("k") == "v0" and await reader.get("k") == "v0"
        assert reader.subscriptions == 1
        assert admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
        t_kill = time.monotonic()
        writer.set("k", "v1")
        while await reader.get("k") != "v1":
            assert time.monotonic() - t_kill < 3.0, "L1 copy outlived local_ttl_s after a backplane loss"
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + 5
        while not (reader.subscriptions > 1 and reader.connected.is_set()):
            assert time.monotonic() < deadline, "async backplane did not re-subscribe"
            await asyncio.sleep(0.01)
        t_set = time.monotonic()
        writer.set("k", "v2")
        while await reader.get("k") != "v2":
            assert time.monotonic() - t_set < 0.5, "no invalidation after re-subscribing"
            await asyncio.sleep(0.002)
    finally:
        await reader.aclose()
        writer.close()
        await aclient.aclose()
        admin.close()


async def test_async_rw_lock_writer_never_exposes_a_half_written_value(async_redis_client: Any, amake: Any,
                                                                       namespace: str) -> None:
    from distkit.locks import AsyncLocks

    record = {"a": 0, "b": 0}

    async def load(key: str) -> list[int]:
        a = record["a"]
        await asyncio.sleep(0.003)
        return [a, record["b"]]

    locks = AsyncLocks(async_redis_client, namespace=namespace)
    writer = amake(loader=load, locks=locks)
    # readers reload all the time (5 ms TTL, no stale window), so their loads overlap the writes
    readers = [amake(loader=load, locks=locks, ttl_s=0.005, jitter=0, stale_for_s=0, local_ttl_s=0)
               for _ in range(3)]
    loads_before = sum(r.stats.loads for r in readers)
    torn: list[list[int]] = []
    stop = asyncio.Event()

    async def read(cache: AsyncHotKeyCache) -> None:
        while not stop.is_set():
            value = await cache.get("cfg")
            if value[0] != value[1]:
                torn.append(value)
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(read(c)) for c in readers]
    try:
        for i in range(1, 11):
            async with writer.write_lock("cfg"):
                record["a"] = i
                await asyncio.sleep(0.005)  # half written
                record["b"] = i
                await writer.invalidate("cfg")
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.gather(*tasks)
        final = await readers[0].get("cfg")
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await locks.aclose()
    assert torn == []
    assert sum(r.stats.loads for r in readers) - loads_before > 10  # reloads really ran during the writes
    assert final == [10, 10]


async def test_async_early_refresh_under_steady_load_has_no_miss(amake: Any) -> None:
    n = [0]

    async def loader(key: str) -> int:
        await asyncio.sleep(0.02)
        n[0] += 1
        return n[0]

    cache = amake(loader=loader, ttl_s=0.8, jitter=0, early_refresh=4.0)
    assert await cache.get("hot") == 1
    stop = time.monotonic() + 2.5

    async def reader() -> list[int]:
        seen = []
        while time.monotonic() < stop:
            seen.append(await cache.get("hot"))
            await asyncio.sleep(0.001)
        return seen

    runs = await asyncio.gather(*(reader() for _ in range(4)))
    assert cache.stats.misses == 1, cache.stats.as_dict()  # only the cold start
    assert n[0] >= 4 and cache.stats.early_refreshes >= 3
    assert all(run == sorted(run) for run in runs)


async def test_background_reload_failing_after_the_soft_timeout_is_reported(amake: Any, fake_clock: Any) -> None:
    state = {"fail": False}

    async def loader(key: str) -> str:
        if state["fail"]:
            await asyncio.sleep(0.2)
            raise RuntimeError("late failure")
        return "v"

    cache = amake(loader=loader, ttl_s=10, jitter=0, clock=fake_clock, load_timeout_s=(0.02, 2.0))
    assert await cache.get("k") == "v"
    state["fail"] = True
    fake_clock.advance(11_000)
    assert await cache.get("k") == "v" and cache.stats.soft_timeouts == 1
    deadline = time.monotonic() + 3
    while cache.stats.fail_safe == 0:
        assert time.monotonic() < deadline, "the background failure was not reported"
        await asyncio.sleep(0.02)
    assert await cache.get("k") == "v"  # still the stale value (inside stale_for_s)


async def test_200_concurrent_gets_of_a_hot_key_share_one_read_within_a_small_pool(redis_url: str,
                                                                                   namespace: str) -> None:
    """200 tasks missing the L1 at once make one L2 read, not 200: with the client's pool capped at 4 (a plain,
    non-blocking pool raises MaxConnectionsError past it), each of them gets the value."""
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(redis_url, max_connections=4)
    loads: list[str] = []

    async def loader(key: str) -> str:
        loads.append(key)
        return "v"

    writer = AsyncHotKeyCache(client, namespace=namespace, loader=loader, ttl_s=60, backplane=False)
    reader = AsyncHotKeyCache(client, namespace=namespace, loader=loader, ttl_s=60, backplane=False)
    try:
        await writer.set("hot", "v")
        results = await asyncio.gather(*(reader.get("hot") for _ in range(200)), return_exceptions=True)
        assert results == ["v"] * 200 and loads == []
        assert reader.stats.as_dict()["l2_hits"] == 200
    finally:
        await writer.aclose()
        await reader.aclose()
        await client.aclose()


async def test_a_get_after_a_write_never_joins_a_read_that_began_before_it(amake: Any) -> None:
    cache = amake(loader=lambda key: "loaded", ttl_s=60, backplane=False)
    await cache.set("k", "old")
    cache.local.clear()
    gate = asyncio.Event()
    read, calls = cache._read, []

    async def held_read(data_key: str) -> Any:  # the first read gets "old" from Redis, then is held at the gate
        calls.append(data_key)
        entry = await read(data_key)
        if len(calls) == 1:
            await gate.wait()
        return entry

    cache._read = held_read
    first = asyncio.ensure_future(cache.get("k"))
    while not calls:
        await asyncio.sleep(0.001)
    await cache.set("k", "new")  # a write in this process while that read is under way
    cache.local.clear()  # and an empty L1: the next get reads L2
    assert await asyncio.wait_for(cache.get("k"), 2) == "new"  # its own read, not the held one
    gate.set()
    assert await first == "old" and len(calls) == 2
