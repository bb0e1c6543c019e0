"""Rate-limit decisions/s: distkit vs the `limits` and `pyrate-limiter` packages and a raw GCRA Lua script, same run,
same Redis; plus the memory backends and 1M distinct memory keys."""

from __future__ import annotations

import itertools
import os
import time
import uuid
from functools import partial
from typing import Any

from bench._table import Row, best_rates, print_table, record_series
from distkit.ratelimit import (
    FixedWindow,
    LeakyBucket,
    MemoryBackend,
    Rate,
    RedisBackend,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)

RAW_GCRA = """
local t = redis.call('TIME'); local now = t[1] * 1000000 + t[2]
local tat = tonumber(redis.call('GET', KEYS[1]) or now); if tat < now then tat = now end
local interval, dvt = tonumber(ARGV[1]), tonumber(ARGV[2])
local new_tat = tat + interval
if now < new_tat - dvt then return 0 end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 1
"""


def _keys(prefix: str) -> Any:
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter) % 1000}"


def _keyed(fn: Any, prefix: str) -> Any:
    """``fn`` called with one of 1000 keys in turn (each implementation gets its own key space)."""
    keys = _keys(prefix)
    return lambda: fn(keys())


def _pyrate(make_bucket: Any) -> Any:
    """A pyrate-limiter ``Limiter`` with one bucket per key (like `limits` and distkit: per-key state), made by
    ``make_bucket(key)``; ``fn(key)`` is one non-blocking decision."""
    from pyrate_limiter import BucketFactory, Limiter, RateItem

    class PerKey(BucketFactory):
        def __init__(self) -> None:
            self.buckets: dict[str, Any] = {}

        def wrap_item(self, name: str, weight: int = 1) -> Any:
            return RateItem(name, time.time_ns() // 1_000_000, weight=weight)

        def get(self, item: Any) -> Any:
            b = self.buckets.get(item.name)
            if b is None:
                b = self.buckets[item.name] = make_bucket(item.name)
            return b

    limiter = Limiter(PerKey())
    return lambda k: limiter.try_acquire(k, blocking=False)


ACCURACY_RATE, ACCURACY_OFFERED, ACCURACY_S = 100, 500, 3.0


def accuracy(r: Any, url: str, ns: str) -> None:
    """Accuracy over time, for the report's plot: each limiter allows 100/s while a caller offers 500/s,
    paced evenly for 3 s (one limiter after the other, 21 s in all); the time of every allowed decision goes to
    ``record_series`` (binned per 100 ms by the report)."""
    from limits import RateLimitItemPerSecond, storage, strategies

    backend = RedisBackend(r, prefix=f"{ns}-acc")
    item = RateLimitItemPerSecond(ACCURACY_RATE, 1)
    lstore = storage.RedisStorage(url)
    rate_ = Rate(ACCURACY_RATE, per_s=1.0)
    token = TokenBucket(rate_, burst=ACCURACY_RATE // 10, backend=backend)
    fixed, log, counter = (cls(rate_, backend=backend) for cls in (FixedWindow, SlidingWindowLog, SlidingWindowCounter))
    l_fixed, l_moving, l_counter = (
        cls(lstore)
        for cls in (
            strategies.FixedWindowRateLimiter,
            strategies.MovingWindowRateLimiter,
            strategies.SlidingWindowCounterRateLimiter,
        )
    )
    limiters: list[tuple[str, Any]] = [  # distkit next to its `limits` counterpart
        (f"distkit TokenBucket (burst {ACCURACY_RATE // 10})", lambda k: token.acquire(k).allowed),
        ("distkit FixedWindow", lambda k: fixed.acquire(k).allowed),
        ("limits FixedWindow", lambda k: l_fixed.hit(item, k)),
        ("distkit SlidingWindowLog", lambda k: log.acquire(k).allowed),
        ("limits MovingWindow", lambda k: l_moving.hit(item, k)),
        ("distkit SlidingWindowCounter", lambda k: counter.acquire(k).allowed),
        ("limits SlidingWindowCounter", lambda k: l_counter.hit(item, k)),
    ]
    interval = 1.0 / ACCURACY_OFFERED
    for i, (impl, allow) in enumerate(limiters):
        key = f"{ns}:acc{i}"
        allowed: list[float] = []
        t0 = time.perf_counter()
        for n in range(int(ACCURACY_S * ACCURACY_OFFERED)):
            delay = t0 + n * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            at = time.perf_counter() - t0
            if allow(key):
                allowed.append(at)
        record_series(
            "ratelimit.accuracy", impl, allowed, rate_per_s=ACCURACY_RATE, offered_per_s=ACCURACY_OFFERED,
            duration_s=ACCURACY_S, bucket_s=0.1,
        )
        print(f"accuracy {impl}: {len(allowed)} allowed in {ACCURACY_S:g} s at {ACCURACY_RATE}/s", flush=True)
    backend.close()


def main() -> None:
    url = os.environ.get("DISTKIT_REDIS_URL")
    if not url:
        print("DISTKIT_REDIS_URL is not set; skipping the rate-limit benchmark (run `make bench`)")
        return
    import redis
    from limits import RateLimitItemPerSecond, storage, strategies

    r = redis.Redis.from_url(url)
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    backend = RedisBackend(r, prefix=ns)
    item = RateLimitItemPerSecond(1000, 1)
    lstore = storage.RedisStorage(url)
    mstore = storage.MemoryStorage()
    big = Rate(1000, per_s=1.0)
    rows: list[Row] = []

    def group(work: str, *impls: tuple[str, Any], per_call: int = 1, note: str = "") -> None:
        """Peers first, then distkit; timed in interleaved turns (see bench._table.best_rates)."""
        fns = [(name, fn if per_call > 1 else _keyed(fn, f"g{len(rows)}-{i}-")) for i, (name, fn) in enumerate(impls)]
        for name, value in best_rates(fns, per_call=per_call).items():
            rows.append(Row(work, name, value, "decisions/s", note if name.startswith("distkit") else ""))

    def pair(work: str, peer_name: str, peer: Any, ours_name: str, ours: Any) -> None:
        group(work, (peer_name, peer), (ours_name, ours))

    from pyrate_limiter import GCRA, Duration, RedisBucket, RedisStateStore, StateBucket
    from pyrate_limiter import FixedWindow as PFixed
    from pyrate_limiter import Rate as PRate

    prate = [PRate(1000, Duration.SECOND)]
    py_fixed = _pyrate(lambda k: RedisBucket.init(prate, r, f"{{{ns}}}:pf:{k}", algorithm=PFixed()))
    py_log = _pyrate(lambda k: RedisBucket.init(prate, r, f"{{{ns}}}:pl:{k}"))
    py_gcra = _pyrate(lambda k: StateBucket(prate, GCRA(), RedisStateStore(r, f"{{{ns}}}:pg:{k}", ttl_ms=2000)))

    fw_limits = strategies.FixedWindowRateLimiter(lstore)
    mw_limits = strategies.MovingWindowRateLimiter(lstore)
    sw_limits = strategies.SlidingWindowCounterRateLimiter(lstore)
    group(
        "Redis fixed window",
        ("limits FixedWindow", lambda k: fw_limits.hit(item, k)),
        ("pyrate-limiter FixedWindow", py_fixed),
        ("distkit FixedWindow", FixedWindow(big, backend=backend).acquire),
        # for scale: the same limiter on redis-py's own command path (what the direct lane saves)
        (
            "distkit FixedWindow, direct=False",
            FixedWindow(big, backend=RedisBackend(r, prefix=ns, direct=False)).acquire,
        ),
    )
    group(
        "Redis sliding log (exact)",
        ("limits MovingWindow", lambda k: mw_limits.hit(item, k)),
        ("pyrate-limiter SlidingWindowLog", py_log),
        ("distkit SlidingWindowLog", SlidingWindowLog(big, backend=backend).acquire),
    )
    group(
        "Redis sliding counter",
        ("limits SlidingWindowCounter", lambda k: sw_limits.hit(item, k)),
        ("pyrate-limiter (nearest: SlidingWindowLog)", py_log),
        ("distkit SlidingWindowCounter", SlidingWindowCounter(big, backend=backend).acquire),
    )
    gcra = r.register_script(RAW_GCRA)
    group(
        "Redis GCRA / token bucket",
        ("limits FixedWindow (its cheapest)", lambda k: fw_limits.hit(item, k)),
        ("pyrate-limiter GCRA", py_gcra),
        ("raw GCRA Lua (redis-py)", lambda k: gcra(keys=[f"{{{ns}}}:raw:{k}"], args=[1000, 1_000_000])),
        ("distkit TokenBucket", TokenBucket(big, burst=1000, backend=backend).acquire),
        ("distkit LeakyBucket (meter)", LeakyBucket(big, capacity=1000, backend=backend).acquire),
        ("distkit TokenBucket warm-up", TokenBucket(big, warmup_s=1.0, backend=backend).acquire),
        ("distkit LeakyBucket.nginx", LeakyBucket.nginx(big, burst=1000, nodelay=True, backend=backend).acquire),
    )

    tb = TokenBucket(Rate(10**9, per_s=1.0), burst=10**6, backend=backend, name="many")
    batch = [(f"user:{i}", 1) for i in range(1000)]
    pipe = r.register_script(RAW_GCRA)

    def raw_pipelined() -> None:
        p = r.pipeline(transaction=False)
        for k, _ in batch:
            pipe(keys=[f"{{{ns}}}:rawp:{k}"], args=[1, 1_000_000], client=p)
        p.execute()

    group(
        "Redis batch of 1000",
        ("raw GCRA Lua, pipelined", raw_pipelined),
        ("distkit acquire_many", lambda: tb.acquire_many(batch)),
        per_call=1000,
        note="goal >= 100k/s",
    )

    # an exact log must not cost O(limit) per decision: per-call latency with a full window, limit 10 vs 100,000
    logs = {}
    for limit in (10, 100_000):
        log = SlidingWindowLog(Rate(limit, per_s=60), backend=backend, name=f"flat{limit}")
        for _ in range(limit // min(limit, 1000)):
            log.acquire("full", cost=min(limit, 1000))
        logs[f"distkit, limit {limit:,}"] = log
    for name, per_s in best_rates([(n, partial(lg.acquire, "full")) for n, lg in logs.items()]).items():
        rows.append(Row("SlidingWindowLog latency, full window", name, 1000 / per_s, "ms"))

    mfw = strategies.FixedWindowRateLimiter(mstore)
    mmw = strategies.MovingWindowRateLimiter(mstore)
    msw = strategies.SlidingWindowCounterRateLimiter(mstore)
    mem = MemoryBackend()
    pair(
        "memory fixed window",
        "limits FixedWindow",
        lambda k: mfw.hit(item, k),
        "distkit FixedWindow",
        FixedWindow(big, backend=mem).acquire,
    )
    pair(
        "memory sliding log (exact)",
        "limits MovingWindow",
        lambda k: mmw.hit(item, k),
        "distkit SlidingWindowLog",
        SlidingWindowLog(big, backend=mem).acquire,
    )
    pair(
        "memory sliding counter",
        "limits SlidingWindowCounter",
        lambda k: msw.hit(item, k),
        "distkit SlidingWindowCounter",
        SlidingWindowCounter(big, backend=mem).acquire,
    )
    group("memory token bucket", ("distkit TokenBucket", TokenBucket(big, backend=mem).acquire))

    # 1M distinct keys (a scan, a crawler): every new key needs room once max_keys (100k) is reached
    def million(fn: Any) -> float:
        t0 = time.perf_counter()
        for i in range(1_000_000):
            fn(f"u{i}")
        return time.perf_counter() - t0

    lim_m = strategies.FixedWindowRateLimiter(storage.MemoryStorage())
    for name, fn, note in (
        ("limits FixedWindow", lambda k: lim_m.hit(item, k), ""),
        ("distkit FixedWindow (max_keys=100k)", FixedWindow(big, backend=MemoryBackend()).acquire, "goal < 10 s"),
    ):
        secs = million(fn)
        rows.append(Row("memory, 1M distinct keys", name, 1_000_000 / secs, "keys/s", f"{secs:.1f} s; {note}"))
    accuracy(r, url, ns)
    for k in r.scan_iter(match=f"*{ns}*", count=1000):
        r.delete(k)
    backend.close()
    print_table(
        "ratelimit (one sync caller, same run, same Redis; best of 5 interleaved turns; "
        "ratio vs the group's first row)",
        rows,
    )


if __name__ == "__main__":
    main()
