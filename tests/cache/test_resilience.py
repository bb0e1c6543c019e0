"""Crashes and topology: a reloader SIGKILLed mid-load, a cache object used across fork(), Redis Cluster."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import pytest

from distkit.cache import HotKeyCache
from tests import faults

ctx = multiprocessing.get_context("fork")


def _doomed_loader_child(url: str, ns: str) -> None:
    import redis

    client = redis.Redis.from_url(url)

    def loader(key: str) -> str:
        client.set(f"{{{ns}:started}}", 1, px=60_000)
        time.sleep(60)  # SIGKILLed here, holding the reload lock
        return "never"

    cache = HotKeyCache(client, namespace=ns, loader=loader, load_timeout_s=(0.05, 0.5), backplane=False)
    cache.get("hot")  # returns the stale value at the soft timeout; the load thread keeps the lock
    time.sleep(60)


def test_sigkilled_reloader_blocks_nobody_beyond_its_lease(redis_client: Any, redis_url: str,
                                                           namespace: str) -> None:
    seed = HotKeyCache(redis_client, namespace=namespace, ttl_s=0.05, jitter=0, backplane=False)
    seed.set("hot", "old")
    seed.close()
    time.sleep(0.1)
    proc = ctx.Process(target=_doomed_loader_child, args=(redis_url, namespace))
    proc.start()
    deadline = time.monotonic() + 20
    while not redis_client.exists(f"{{{namespace}:started}}"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    t_kill = time.monotonic()
    calls = []
    cache = HotKeyCache(redis_client, namespace=namespace, loader=lambda k: calls.append(k) or "new",
                        load_timeout_s=(0.05, 0.5), backplane=False)
    try:
        assert redis_client.pttl(f"{{{namespace}:hot}}:reload") > 0  # the dead process's lock is still there
        values = []
        while True:
            values.append(cache.get("hot"))  # stale while the dead holder's lease runs, never an error
            if values[-1] == "new":
                break
            assert time.monotonic() - t_kill < 0.5 + 1.0 + 1.0, "reload lock outlived its lease"
            time.sleep(0.02)
        assert set(values[:-1]) <= {"old"} and calls == ["hot"]
    finally:
        cache.close()


def _fork_child(cache: HotKeyCache, out: Any) -> None:
    try:
        first = cache.get("k")  # the parent's L1 copy was dropped at fork: this reads Redis
        bp = cache.backplane
        deadline = time.time() + 10
        while cache.get("k") != "v2" and time.time() < deadline:  # the parent's set reaches our new listener
            time.sleep(0.002)
        out.put((first, cache.get("k"), bp is not None and bp._thread.is_alive(), cache.stats.l2_hits))
    except Exception as exc:  # report instead of dying silently
        out.put(repr(exc))


def test_cache_object_keeps_working_after_fork(make_cache: Any) -> None:
    cache = make_cache(loader=lambda k: "v1", local_ttl_s=30)
    assert cache.get("k") == "v1"
    out = ctx.Queue()
    proc = ctx.Process(target=_fork_child, args=(cache, out))
    proc.start()
    time.sleep(0.5)  # let the child start its listener (it reports failure if the set never arrives)
    cache.set("k", "v2")
    report = out.get(timeout=20)
    proc.join(10)
    assert report == ("v1", "v2", True, 2), report  # both from Redis: L1 dropped at fork, then by the backplane
    assert cache.get("k") == "v2"


def test_works_on_redis_cluster(redis_cluster: Any, namespace: str) -> None:
    calls: list[str] = []

    def loader(key: str) -> dict[str, str]:
        calls.append(key)
        return {"key": key}

    a = HotKeyCache(redis_cluster, namespace=namespace, loader=loader, local_ttl_s=30)
    b = HotKeyCache(redis_cluster, namespace=namespace, loader=loader, local_ttl_s=30)
    try:
        keys = [f"sku:{i}" for i in range(12)]  # spread over the 3 masters
        assert [a.get(k) for k in keys] == [{"key": k} for k in keys]
        assert [b.get(k) for k in keys] == [{"key": k} for k in keys] and len(calls) == 12
        for k in keys:
            assert redis_cluster.pttl(f"{{{namespace}:{k}}}") > 0
        a.set("sku:3", {"key": "changed"})
        deadline = time.monotonic() + 2
        while b.get("sku:3") != {"key": "changed"}:  # b holds sku:3 in its L1 for 30 s: only the backplane helps
            assert time.monotonic() < deadline, "backplane message did not reach the other cache on the cluster"
            time.sleep(0.005)
        a.invalidate("sku:5")
        deadline = time.monotonic() + 2
        while len(calls) == 12:
            b.get("sku:5")
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert calls[12:] == ["sku:5"]
    finally:
        a.close()
        b.close()


redis_proxy = faults.redis_proxy  # the fixture


@pytest.mark.parametrize("flavour", ["threads", "tasks"])
def test_16_callers_sharing_a_read_of_a_silent_server_all_answer_in_bounded_time(redis_proxy: Any, namespace: str,
                                                                                 flavour: str) -> None:
    """Redis stops answering mid-traffic (black-holed): 16 callers that miss the L1 together share one read.
    Each of them still answers (the loader's value, fail-safe) within the read's deadline and the reload's
    bounds; none waits on the shared read for longer than it takes to fail."""
    import redis
    import redis.asyncio as aredis

    from distkit.cache import AsyncHotKeyCache

    loads: list[str] = []

    def loader(key: str) -> str:
        loads.append(key)
        return "fallback"

    outcomes: list[Any] = []
    took: list[float] = []
    if flavour == "threads":
        client = redis.Redis.from_url(redis_proxy.url, socket_timeout=5)
        cache = HotKeyCache(client, namespace=namespace, loader=loader, redis_timeout_s=0.3, backplane=False)
        cache.get("warm")  # connections made before the hole
        redis_proxy.black_hole = True
        start = threading.Barrier(16)

        def get() -> None:
            start.wait()
            t0 = time.monotonic()
            try:
                outcomes.append(cache.get("hot"))
            except Exception as exc:
                outcomes.append(type(exc).__name__)
            took.append(time.monotonic() - t0)

        threads = [threading.Thread(target=get) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        cache.close()
    else:

        async def run() -> None:
            client = aredis.Redis.from_url(redis_proxy.url, socket_timeout=5)
            cache = AsyncHotKeyCache(client, namespace=namespace, loader=loader, redis_timeout_s=0.3,
                                     backplane=False)
            await cache.get("warm")
            redis_proxy.black_hole = True

            async def get() -> None:
                t0 = time.monotonic()
                try:
                    outcomes.append(await cache.get("hot"))
                except Exception as exc:
                    outcomes.append(type(exc).__name__)
                took.append(time.monotonic() - t0)

            await asyncio.gather(*(get() for _ in range(16)))
            await cache.aclose()
            await client.aclose()

        asyncio.run(run())
    assert outcomes == ["fallback"] * 16, outcomes  # the loader's value, fail-safe
    assert max(took) < 5.0, took
