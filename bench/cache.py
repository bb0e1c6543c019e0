"""distkit.cache.HotKeyCache against cashews and dogpile.cache on the same Redis, measured in one run.

* hot-key ``get`` throughput: from distkit's L1, and from Redis (distkit with the L1 off, cashews, dogpile.cache,
  raw redis-py ``GET``), one caller, rounds interleaved (best turn kept);
* a hot key expiring under 8 concurrent callers: 3 s, logical TTL 1 s, a 50 ms loader; loader calls and the
  p50/p99 latency of every call. distkit and dogpile.cache use 8 threads; cashews is asyncio-only, so 8 tasks on
  one loop. distkit also runs as 4 processes x 2 threads (loads counted in Redis).

Run: ``python -m bench cache`` with ``DISTKIT_REDIS_URL`` set.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench._table import Row, best_rates, percentiles, print_table
from distkit.cache import HotKeyCache
from distkit.config import Settings

DURATION_S = 3.0
TTL_S = 1
LOAD_S = 0.05
THREADS = 8


def _cashews(url: str, **setup: Any) -> Any:
    from cashews import Cache

    cache = Cache()
    cache.setup(url, **setup)
    return cache


def _dogpile(url: str, expiration_time: float | None = None) -> Any:
    from dogpile.cache import make_region

    return make_region().configure(
        "dogpile.cache.redis",
        expiration_time=expiration_time,
        arguments={"url": url, "redis_expiration_time": 60, "distributed_lock": True, "thread_local_lock": False,
                   "lock_timeout": 5},
    )


def get_rates(client: Any, url: str, ns: str) -> list[Row]:
    l1 = HotKeyCache(client, namespace=ns, loader=lambda k: {"rate": 1.25, "ccy": "EUR"}, ttl_s=3600)
    l2 = HotKeyCache(client, namespace=ns, loader=lambda k: {"rate": 1.25, "ccy": "EUR"}, ttl_s=3600, local_ttl_s=0)
    l1.get("hot")
    l2.get("hot")
    region = _dogpile(url)
    region.set(f"{ns}:dogpile", {"rate": 1.25, "ccy": "EUR"})
    client.set(f"{ns}:raw", b'{"rate":1.25,"ccy":"EUR"}', ex=600)
    candidates: list[tuple[str, Callable[[], object]]] = [
        ("distkit L1", lambda: l1.get("hot")),
        ("distkit L2 (local_ttl_s=0)", lambda: l2.get("hot")),
        ("dogpile.cache redis", lambda: region.get(f"{ns}:dogpile")),
        ("redis-py GET (raw)", lambda: client.get(f"{ns}:raw")),
    ]
    best = best_rates(candidates, rounds=5, seconds=2.0)
    # cashews is asyncio-only: the same loop of awaited gets, timed inside one event loop
    loop = asyncio.new_event_loop()
    cashews = _cashews(url)
    loop.run_until_complete(cashews.set(f"{ns}:cashews", {"rate": 1.25, "ccy": "EUR"}, expire=600))
    cashews_cs = _cashews(url, client_side=True)
    loop.run_until_complete(cashews_cs.set(f"{ns}:cashews-cs", {"rate": 1.25, "ccy": "EUR"}, expire=600))

    def arate(fn: Callable[[], Any], seconds: float = 1.0) -> float:
        async def run() -> float:
            for _ in range(50):
                await fn()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                await fn()
                n += 1
            return n / (time.perf_counter() - t0)

        return loop.run_until_complete(run())

    best["cashews redis"] = max(arate(lambda: cashews.get(f"{ns}:cashews")) for _ in range(2))
    try:
        best["cashews redis client_side=True"] = max(arate(lambda: cashews_cs.get(f"{ns}:cashews-cs"))
                                                     for _ in range(2))
    except Exception as exc:  # depends on the server's CLIENT TRACKING support
        print(f"cashews client_side skipped: {exc!r}")
    loop.run_until_complete(cashews.close())
    loop.run_until_complete(cashews_cs.close())
    loop.close()
    l1.close()
    l2.close()
    rows = []
    for impl, work in (("distkit L1", "hot-key get, in-process"),
                       ("cashews redis client_side=True", "hot-key get, in-process"),
                       ("distkit L2 (local_ttl_s=0)", "hot-key get, from Redis"),
                       ("cashews redis", "hot-key get, from Redis"),
                       ("dogpile.cache redis", "hot-key get, from Redis"),
                       ("redis-py GET (raw)", "hot-key get, from Redis")):
        if impl in best:
            rows.append(Row(work, impl, best[impl], "gets/s", f"{1e6 / best[impl]:.1f} us/get"))
    return rows


def _hammer(get: Callable[[], Any], threads: int, seconds: float) -> list[float]:
    samples: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def worker(i: int) -> None:
        out = samples[i]
        start.wait()
        stop = time.perf_counter() + seconds
        while True:
            t0 = time.perf_counter()
            if t0 >= stop:
                return
            get()
            out.append(time.perf_counter() - t0)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return [s for part in samples for s in part]


def expiry_distkit(client: Any, ns: str) -> tuple[int, list[float]]:
    loads = [0]

    def loader(key: str) -> dict[str, float]:
        loads[0] += 1
        time.sleep(LOAD_S)
        return {"rate": time.time()}

    cache = HotKeyCache(client, namespace=ns + "-dk", loader=loader, ttl_s=TTL_S, jitter=0)
    samples = _hammer(lambda: cache.get("hot"), THREADS, DURATION_S)
    cache.close()
    return loads[0], samples


def _proc_worker(url: str, ns: str, barrier: Any, out: Any) -> None:
    import redis

    client = redis.Redis.from_url(url)

    def loader(key: str) -> dict[str, float]:
        client.incr(f"{ns}:mp-loads")
        client.expire(f"{ns}:mp-loads", 600)
        time.sleep(LOAD_S)
        return {"rate": time.time()}

    cache = HotKeyCache(client, namespace=ns + "-mp", loader=loader, ttl_s=TTL_S, jitter=0)
    barrier.wait(30)
    samples = sorted(_hammer(lambda: cache.get("hot"), 2, DURATION_S))
    out.put([*samples[:: max(1, len(samples) // 20_000)], samples[-1]])
    cache.close()


def expiry_distkit_processes(client: Any, url: str, ns: str) -> tuple[int, list[float]]:
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_proc_worker, args=(url, ns, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    samples = [s for _ in procs for s in out.get(timeout=60)]
    for p in procs:
        p.join(30)
    return int(client.get(f"{ns}:mp-loads") or 0), samples


def expiry_dogpile(url: str, ns: str) -> tuple[int, list[float]]:
    region = _dogpile(url, expiration_time=TTL_S)
    loads = [0]

    def creator() -> dict[str, float]:
        loads[0] += 1
        time.sleep(LOAD_S)
        return {"rate": time.time()}

    samples = _hammer(lambda: region.get_or_create(f"{ns}:dogpile-hot", creator), THREADS, DURATION_S)
    return loads[0], samples


def expiry_cashews(url: str, ns: str, mode: str) -> tuple[int, list[float]]:
    cache = _cashews(url)
    loads = [0]

    async def load() -> dict[str, float]:
        loads[0] += 1
        await asyncio.sleep(LOAD_S)
        return {"rate": time.time()}

    key = f"{ns}:cashews-{mode}"
    if mode == "plain":
        fn = cache(ttl=TTL_S, key=key)(load)
    elif mode == "lock=True":
        fn = cache(ttl=TTL_S, key=key, lock=True)(load)
    else:
        fn = cache.early(ttl=TTL_S, key=key, early_ttl=TTL_S * 0.8)(load)
    samples: list[float] = []

    async def run() -> None:
        stop = time.perf_counter() + DURATION_S

        async def task() -> None:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop:
                    return
                await fn()
                samples.append(time.perf_counter() - t0)

        await asyncio.gather(*(task() for _ in range(THREADS)))
        await cache.close()

    asyncio.run(run())
    return loads[0], samples


def expiry_distkit_async(url: str, ns: str) -> tuple[int, list[float]]:
    import redis.asyncio as aredis

    from distkit.cache import AsyncHotKeyCache

    loads = [0]

    async def load(key: str) -> dict[str, float]:
        loads[0] += 1
        await asyncio.sleep(LOAD_S)
        return {"rate": time.time()}

    samples: list[float] = []

    async def run() -> None:
        client = aredis.Redis.from_url(url)
        cache = AsyncHotKeyCache(client, namespace=ns + "-dka", loader=load, ttl_s=TTL_S, jitter=0)
        stop = time.perf_counter() + DURATION_S

        async def task() -> None:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop:
                    return
                await cache.get("hot")
                samples.append(time.perf_counter() - t0)
                await asyncio.sleep(0)  # an L1 hit never suspends: let the other tasks (and the listener) run

        await asyncio.gather(*(task() for _ in range(THREADS)))
        await cache.aclose()
        await client.aclose()

    asyncio.run(run())
    return loads[0], samples


def expiry_rows(client: Any, url: str, ns: str) -> list[Row]:
    runs: list[tuple[str, str, Callable[[], tuple[int, list[float]]]]] = [
        ("distkit (8 threads)", "L1 + XFetch + one reload per expiry", lambda: expiry_distkit(client, ns)),
        ("distkit (4 procs x 2 threads)", "loads counted in Redis", lambda: expiry_distkit_processes(client, url, ns)),
        ("distkit AsyncHotKeyCache (8 tasks)", "", lambda: expiry_distkit_async(url, ns)),
        ("dogpile.cache (8 threads)", "redis, distributed_lock", lambda: expiry_dogpile(url, ns)),
        ("cashews plain (8 tasks)", "", lambda: expiry_cashews(url, ns, "plain")),
        ("cashews lock=True (8 tasks)", "", lambda: expiry_cashews(url, ns, "lock=True")),
        ("cashews early (8 tasks)", "early_ttl=0.8 s", lambda: expiry_cashews(url, ns, "early")),
    ]
    rows: list[Row] = []
    for impl, note, run in runs:
        loads, samples = run()
        p50, p99 = percentiles(samples)
        rows.append(Row("expiring hot key: loader calls in 3 s", impl, loads, "loads", note))
        rows.append(Row("expiring hot key: get p50", impl, p50, "ms", f"{len(samples):,} gets"))
        rows.append(Row("expiring hot key: get p99", impl, p99, "ms", f"max {max(samples) * 1000:.1f} ms"))
    return rows


def main() -> None:
    settings = Settings.from_env()
    url = settings.redis_url
    if not url:
        raise SystemExit("DISTKIT_REDIS_URL is not set (make bench starts the servers)")
    client = settings.redis()
    ns = f"bench-cache-{uuid.uuid4().hex[:6]}"
    try:
        rows = get_rates(client, url, ns)
        print_table("distkit.cache hot-key get vs peers (one caller, same run; ratio = gets/s vs distkit)", rows,
                    baseline="distkit")
        rows = expiry_rows(client, url, ns)
        print_table(
            f"a hot key expiring every {TTL_S} s for {DURATION_S:.0f} s, {LOAD_S * 1000:.0f} ms loader, 8 callers "
            "(ratio: loads = peer/distkit, latency = distkit advantage)",
            rows,
            baseline="distkit (8 threads)",
        )
    finally:
        for k in client.scan_iter(match=f"*{ns}*", count=1000):
            client.delete(k)
        client.close()


if __name__ == "__main__":
    main()
