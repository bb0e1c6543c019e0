"""HotKeyCache in one process against the shared Redis: levels, null caching, jitter, fail-safe, timeouts, XFetch,
the decorator (sync and async), the RW-lock write path and input validation."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from typing import Any

import pytest

from distkit.cache import HotKeyCache
from distkit.cache.entry import decode
from distkit.errors import (
    BackendUnavailableError,
    CacheCodecError,
    CacheLoadTimeoutError,
    InvalidArgumentError,
    InvalidCacheConfigError,
)


class Counting:
    """A loader that counts its calls and can be told to fail or to be slow."""

    def __init__(self, value: Any = "v", delay: float = 0.0) -> None:
        self.calls = 0
        self.value = value
        self.delay = delay
        self.error: Exception | None = None
        self.lock = threading.Lock()

    def __call__(self, key: str) -> Any:
        with self.lock:
            self.calls += 1
            n = self.calls
        if self.delay:
            time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.value if not callable(self.value) else self.value(key, n)


def test_levels_l1_then_l2_then_loader(make_cache: Any) -> None:
    loader = Counting(value=lambda k, n: {"key": k, "n": n})
    a = make_cache(loader=loader)
    assert a.get("cfg:rates") == {"key": "cfg:rates", "n": 1}
    assert a.get("cfg:rates") == {"key": "cfg:rates", "n": 1}
    assert a.stats.l1_hits == 1 and a.stats.loads == 1
    b = make_cache(loader=loader)  # another process's view: empty L1, same L2
    assert b.get("cfg:rates") == {"key": "cfg:rates", "n": 1}
    assert b.stats.l2_hits == 1 and b.stats.loads == 0 and loader.calls == 1


def test_set_invalidate_unicode_and_json_values(make_cache: Any) -> None:
    loader = Counting(value="from-db")
    cache = make_cache(loader=loader)
    value = {"名前": "ünïcødé ✓", "n": [1, 2.5, None, True], "nested": {"x": "y" * 10_000}}
    cache.set("k", value)
    assert cache.get("k") == value
    assert make_cache(loader=loader).get("k") == value  # through L2
    cache.invalidate("k")
    assert cache.get("k") == "from-db" and loader.calls == 1
    with pytest.raises(CacheCodecError):
        cache.set("bad", object())


def test_every_key_has_a_ttl_and_a_hash_tag(make_cache: Any, redis_client: Any, namespace: str) -> None:
    cache = make_cache(loader=Counting(), ttl_s=30, stale_for_s=60)
    cache.get("a")
    cache.set("b", 1)
    keys = sorted(k.decode() for k in redis_client.scan_iter(match=f"*{namespace}*"))
    assert keys == [f"{{{namespace}:a}}", f"{{{namespace}:b}}"]
    for k in keys:
        assert 0 < redis_client.pttl(k) <= (30 * 1.1 + 60) * 1000


def test_null_marker_stops_repeated_loads_for_a_missing_id(make_cache: Any, fake_clock: Any) -> None:
    loader = Counting(value=None)
    cache = make_cache(loader=loader, null_ttl_s=30, jitter=0, clock=fake_clock)
    other = make_cache(loader=loader, null_ttl_s=30, jitter=0, clock=fake_clock)
    for _ in range(50):
        assert cache.get("sku:missing") is None
        assert other.get("sku:missing") is None
    assert loader.calls == 1
    fake_clock.advance(31_000)
    assert cache.get("sku:missing") is None
    assert loader.calls == 2


def test_ttl_jitter_spreads_real_expiries(make_cache: Any, redis_client: Any, namespace: str) -> None:
    cache = make_cache(ttl_s=100, jitter=0.2, stale_for_s=0, local_ttl_s=0)
    for i in range(300):
        cache.set(f"k{i}", i)
    pttls = [redis_client.pttl(f"{{{namespace}:k{i}}}") for i in range(300)]
    assert min(pttls) >= 80_000 - 1_000 and max(pttls) <= 120_000
    spread = max(pttls) - min(pttls)
    stdev = statistics.pstdev(pttls)
    print(f"jitter 0.2 on 100 s: spread {spread / 1000:.1f} s, stdev {stdev / 1000:.1f} s (uniform: 11.5 s)")
    assert spread > 30_000 and 8_000 < stdev < 15_000
    logical = [decode(redis_client.get(f"{{{namespace}:k{i}}}"), cache.codec).expires_ms for i in range(300)]
    assert max(logical) - min(logical) > 30_000
    flat = make_cache(ttl_s=100, jitter=0, stale_for_s=0, local_ttl_s=0, namespace=namespace + "-flat")
    for i in range(20):
        flat.set(f"k{i}", i)
    flat_pttls = [redis_client.pttl(f"{{{namespace}-flat:k{i}}}") for i in range(20)]
    assert max(flat_pttls) - min(flat_pttls) < 2_000
    for i in range(20):
        redis_client.delete(f"{{{namespace}-flat:k{i}}}")


def test_fail_safe_serves_stale_for_stale_for_s_then_raises(make_cache: Any, fake_clock: Any) -> None:
    loader = Counting(value=lambda k, n: f"v{n}")
    cache = make_cache(loader=loader, ttl_s=10, jitter=0, stale_for_s=60, fail_safe_throttle_s=1, clock=fake_clock)
    assert cache.get("k") == "v1"
    loader.error = RuntimeError("db down")
    fake_clock.advance(11_000)  # logically expired, inside the 60 s fail-safe window
    assert cache.get("k") == "v1"
    assert cache.stats.fail_safe == 1 and loader.calls == 2
    assert cache.get("k") == "v1" and loader.calls == 2  # throttled: no retry storm on the failing loader
    fake_clock.advance(2_000)
    assert cache.get("k") == "v1" and loader.calls == 3 and cache.stats.fail_safe == 2
    fake_clock.advance(10_000 + 60_000 - 13_000 - 1)  # 1 ms before the window closes
    assert cache.get("k") == "v1"
    fake_clock.advance(2)
    with pytest.raises(RuntimeError, match="db down"):
        cache.get("k")
    loader.error = None
    assert cache.get("k") == f"v{loader.calls}"


def test_soft_timeout_serves_stale_and_the_load_finishes_in_background(make_cache: Any, fake_clock: Any) -> None:
    loader = Counting(value=lambda k, n: f"v{n}")
    cache = make_cache(loader=loader, ttl_s=10, jitter=0, clock=fake_clock, load_timeout_s=(0.05, 5.0))
    assert cache.get("k") == "v1"
    fake_clock.advance(11_000)
    loader.delay = 0.6
    t0 = time.monotonic()
    assert cache.get("k") == "v1"
    assert time.monotonic() - t0 < 0.5 and cache.stats.soft_timeouts == 1
    assert cache.get("k") == "v1" and loader.calls == 2  # the load in flight is not duplicated
    deadline = time.monotonic() + 5
    while cache.get("k") != "v2" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cache.get("k") == "v2" and loader.calls == 2
    assert make_cache(loader=loader, clock=fake_clock).get("k") == "v2"  # written to L2 as well


def test_hard_timeout_without_stale_raises_and_discards_the_late_value(make_cache: Any, redis_client: Any,
                                                                      namespace: str) -> None:
    release = threading.Event()
    returned = threading.Event()

    def slow(key: str) -> str:
        release.wait(10)
        returned.set()
        return "late"

    cache = make_cache(loader=slow, load_timeout_s=(0.05, 0.3))
    t0 = time.monotonic()
    with pytest.raises(CacheLoadTimeoutError):
        cache.get("k")
    assert 0.25 <= time.monotonic() - t0 < 2.0
    release.set()
    assert returned.wait(5)
    time.sleep(0.1)  # let the load thread reach its (refused) write
    assert redis_client.get(f"{{{namespace}:k}}") is None
    assert cache.stats.abandoned >= 1


def test_early_refresh_under_steady_load_has_no_miss(make_cache: Any) -> None:
    loader = Counting(value=lambda k, n: n, delay=0.02)
    cache = make_cache(loader=loader, ttl_s=0.8, jitter=0, early_refresh=4.0, local_ttl_s=5)
    assert cache.get("hot") == 1
    assert cache.stats.misses == 1
    stop = time.monotonic() + 2.5  # three logical expiries
    seen: list[list[int]] = [[] for _ in range(4)]

    def reader(out: list[int]) -> None:
        while time.monotonic() < stop:
            out.append(cache.get("hot"))
            time.sleep(0.001)

    threads = [threading.Thread(target=reader, args=(out,)) for out in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"early refresh: {sum(map(len, seen))} gets, {loader.calls} loads, stats {cache.stats.as_dict()}")
    assert cache.stats.misses == 1, cache.stats.as_dict()  # only the cold start: no caller ever found it expired
    assert loader.calls >= 4 and cache.stats.early_refreshes >= 3
    for out in seen:
        assert out == sorted(out)  # each reader only ever moved forward


def test_cached_decorator_sync(make_cache: Any) -> None:
    cache = make_cache()
    calls: list[str] = []

    @cache.cached(key=lambda sku: f"sku:{sku}")
    def load_sku(sku: str) -> dict[str, str]:
        calls.append(sku)
        return {"sku": sku}

    assert load_sku("a") == {"sku": "a"} and load_sku("a") == {"sku": "a"} and load_sku("b") == {"sku": "b"}
    assert calls == ["a", "b"]
    assert load_sku.__name__ == "load_sku"


async def test_cached_decorator_async_and_async_methods(make_cache: Any) -> None:
    cache = make_cache()
    calls: list[int] = []

    @cache.cached(key=lambda n: f"n:{n}")
    async def load(n: int) -> int:
        await asyncio.sleep(0.01)
        calls.append(n)
        return n * 10

    assert await asyncio.gather(*(load(1) for _ in range(20))) == [10] * 20
    assert await load(2) == 20 and calls == [1, 2]
    await cache.aset("n:1", 99)
    assert await load(1) == 99
    await cache.ainvalidate("n:1")
    assert await load(1) == 10 and calls == [1, 2, 1]
    assert await cache.aget("n:2") == 20


def test_rw_lock_writer_never_lets_a_reader_see_a_half_written_value(make_cache: Any, redis_client: Any,
                                                                     namespace: str) -> None:
    from distkit.locks import Locks

    a_key, b_key = f"{namespace}:db:a", f"{namespace}:db:b"
    redis_client.set(a_key, 0)
    redis_client.set(b_key, 0)

    def load(key: str) -> list[int]:  # reads the two halves with a gap, like two SELECTs
        a = int(redis_client.get(a_key))
        time.sleep(0.003)
        return [a, int(redis_client.get(b_key))]

    locks = Locks(redis_client, namespace=namespace)
    writer_cache = make_cache(loader=load, locks=locks)
    reader_caches = [make_cache(loader=load, locks=locks, load_timeout_s=(0.1, 5.0)) for _ in range(3)]
    torn: list[list[int]] = []
    reads = [0]
    stop = threading.Event()

    def reader(cache: HotKeyCache) -> None:
        while not stop.is_set():
            value = cache.get("cfg")
            reads[0] += 1
            if value[0] != value[1]:
                torn.append(value)

    threads = [threading.Thread(target=reader, args=(c,)) for c in reader_caches]
    for t in threads:
        t.start()
    try:
        for i in range(1, 16):
            with writer_cache.write_lock("cfg"):
                redis_client.set(a_key, i)
                time.sleep(0.005)  # half written: a is new, b is old
                redis_client.set(b_key, i)
                writer_cache.invalidate("cfg")
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
        locks.close()
    assert torn == [] and reads[0] > 15
    assert reader_caches[0].get("cfg") == [15, 15]


def test_redis_outage_still_loads_in_process(private_redis: Any, make_cache: Any) -> None:
    import redis

    client = redis.Redis.from_url(private_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    loader = Counting(value="db")
    cache = make_cache(client, loader=loader, backplane=False)
    cache.set("warm", "cached")
    private_redis.stop()
    assert cache.get("warm") == "cached"  # L1
    assert cache.get("cold") == "db" and cache.get("cold") == "db" and loader.calls == 1  # L1 only, no stampede
    with pytest.raises(BackendUnavailableError):
        cache.set("warm", "new")
    with pytest.raises(BackendUnavailableError):
        cache.invalidate("warm")
    client.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl_s": 0},
        {"ttl_s": -1},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"local_ttl_s": -1},
        {"max_local_entries": -1},
        {"early_refresh": -1},
        {"null_ttl_s": 0},
        {"stale_for_s": -5},
        {"load_timeout_s": (2.0, 1.0)},
        {"load_timeout_s": 3},
        {"namespace": ""},
        {"loader": "not callable"},
    ],
)
def test_bad_arguments_are_typed(redis_client: Any, kwargs: dict[str, Any]) -> None:
    kwargs.setdefault("namespace", "t-bad")
    with pytest.raises(InvalidCacheConfigError) as info:
        HotKeyCache(redis_client, backplane=False, **kwargs)
    assert isinstance(info.value, InvalidArgumentError)


def test_get_without_loader_and_bad_key(make_cache: Any) -> None:
    cache = make_cache()
    with pytest.raises(InvalidCacheConfigError, match="loader"):
        cache.get("x")
    with pytest.raises(InvalidCacheConfigError):
        cache.get("", loader=lambda k: 1)


def test_fail_safe_and_loads_are_counted_in_opentelemetry(make_cache: Any, fake_clock: Any, namespace: str,
                                                          monkeypatch: Any) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from distkit._metrics import use_meter_provider

    reader = InMemoryMetricReader()
    with use_meter_provider(MeterProvider(metric_readers=[reader])):  # private: no global provider
        loader = Counting(value="v")
        cache = make_cache(loader=loader, ttl_s=10, jitter=0, clock=fake_clock)
        cache.get("k")
        loader.error = RuntimeError("down")
        fake_clock.advance(11_000)
        assert cache.get("k") == "v"
    points = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name in ("distkit.cache.loads", "distkit.cache.fail_safe", "distkit.cache.stale"):
                    for p in m.data.data_points:
                        points[(m.name, p.attributes["namespace"])] = p.value
    assert points == {("distkit.cache.loads", namespace): 2, ("distkit.cache.fail_safe", namespace): 1}


async def test_async_loader_past_the_hard_timeout_is_cancelled(make_cache: Any) -> None:
    cache = make_cache(load_timeout_s=(0.05, 0.2))
    cancelled = asyncio.Event()

    @cache.cached(key=lambda n: f"slow:{n}")
    async def slow(n: int) -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return n

    with pytest.raises(CacheLoadTimeoutError):
        await slow(1)
    await asyncio.wait_for(cancelled.wait(), 5)


def test_l1_off_reads_redis_every_time_and_starts_no_listener(make_cache: Any) -> None:
    loader = Counting(value=lambda k, n: n)
    cache = make_cache(loader=loader, local_ttl_s=0)
    other = make_cache(loader=loader)
    assert cache.backplane is None and cache.get("k") == 1 and cache.get("k") == 1
    assert cache.stats.l2_hits == 1 and cache.stats.l1_hits == 0
    other.set("k", 7)
    assert cache.get("k") == 7  # no L1 copy to invalidate


def test_locks_of_the_other_kind_are_refused_not_silently_skipped() -> None:
    """``HotKeyCache(sync_client, locks=AsyncLocks(...))`` type-checked and was accepted: each reload then called
    the async lock's ``acquire()``, got an un-awaited coroutine (truthy) and loaded without the read lock."""
    import fakeredis

    from distkit.cache import AsyncHotKeyCache
    from distkit.locks import AsyncLocks, Locks

    alocks, locks = AsyncLocks(fakeredis.FakeAsyncRedis()), Locks(fakeredis.FakeRedis())
    with pytest.raises(InvalidCacheConfigError, match="locks= must match the client"):
        HotKeyCache(fakeredis.FakeRedis(), loader=lambda key: 1, locks=alocks)
    with pytest.raises(InvalidCacheConfigError, match="locks= must match the client"):
        AsyncHotKeyCache(fakeredis.FakeAsyncRedis(), locks=locks)
    HotKeyCache(fakeredis.FakeRedis(), loader=lambda key: 1, locks=locks).close()
    locks.close()


def test_32_threads_missing_the_l1_together_share_one_read_within_a_small_pool(make_cache: Any, redis_url: str) -> None:
    """32 threads asking for a hot key at once make one L2 read: with the client's pool capped at 4 (redis-py
    raises MaxConnectionsError past it), each of them gets the value and none runs the loader."""
    import redis

    client = redis.Redis.from_url(redis_url, max_connections=4)
    loads: list[str] = []
    writer = make_cache(client, loader=loads.append, ttl_s=60, backplane=False)
    writer.set("hot", "v")
    results: list[Any] = []
    for _ in range(5):  # five bursts, each on a fresh reader with an empty L1
        reader = make_cache(client, loader=loads.append, ttl_s=60, backplane=False)
        start = threading.Barrier(32)

        def get(cache: HotKeyCache = reader, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                results.append(cache.get("hot"))
            except Exception as exc:  # counted below
                results.append(repr(exc))

        threads = [threading.Thread(target=get) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert results == ["v"] * 160 and loads == []
    client.close()


def test_a_get_after_a_write_never_joins_a_read_that_began_before_it_sync(make_cache: Any) -> None:
    # redis_timeout_s=5: a get that wrongly joined the held read would wait for it 6 s before reading itself
    cache = make_cache(loader=lambda key: "loaded", ttl_s=60, backplane=False, redis_timeout_s=5)
    cache.set("k", "old")
    cache.local.clear()
    gate, began = threading.Event(), threading.Event()
    read, calls = cache._read, []

    def held_read(data_key: str) -> Any:  # the first read gets "old" from Redis, then is held at the gate
        calls.append(data_key)
        entry = read(data_key)
        if len(calls) == 1:
            began.set()
            gate.wait(10)
        return entry

    cache._read = held_read
    first: list[Any] = []
    a = threading.Thread(target=lambda: first.append(cache.get("k")))
    a.start()
    assert began.wait(5)
    cache.set("k", "new")  # a write in this process while that read is under way
    cache.local.clear()  # and an empty L1: the next get reads L2
    second: list[Any] = []
    b = threading.Thread(target=lambda: second.append(cache.get("k")))
    b.start()
    b.join(2)  # its own read: done at once, not after the held one (the gate opens only below)
    assert second == ["new"]
    gate.set()
    a.join(5)
    assert first == ["old"] and len(calls) == 2
