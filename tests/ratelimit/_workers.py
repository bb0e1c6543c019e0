"""Child-process bodies for the rate-limit tests (importable by spawn)."""

from __future__ import annotations

import threading
import time


def make(kind: str, url: str, prefix: str, algo: str):
    import redis

    from distkit.ratelimit import (
        FixedWindow,
        LeakyBucket,
        Rate,
        RedisBackend,
        SlidingWindowCounter,
        SlidingWindowLog,
        TokenBucket,
    )

    backend = RedisBackend(redis.Redis.from_url(url), prefix=prefix)
    return {
        "token": lambda: TokenBucket(Rate(5, per_s=60), burst=5, backend=backend),
        "token100": lambda: TokenBucket(Rate(100, per_s=1.0), burst=20, backend=backend),
        "leaky": lambda: LeakyBucket(Rate(5, per_s=60), capacity=5, backend=backend),
        "fixed": lambda: FixedWindow(Rate(5, per_s=60), backend=backend),
        "log": lambda: SlidingWindowLog(Rate(5, per_s=60), backend=backend),
        "counter": lambda: SlidingWindowCounter(Rate(5, per_s=60), backend=backend),
    }[algo]()


def hammer(
    url: str, prefix: str, algo: str, key: str, threads: int, per_thread: int, seconds: float, out: str, start_evt
) -> None:
    limiter = make("redis", url, prefix, algo)
    allowed = [0] * threads
    barrier = threading.Barrier(threads)

    def run(i: int) -> None:
        barrier.wait()
        deadline = time.monotonic() + seconds
        n = 0
        while n < per_thread or time.monotonic() < deadline:
            if limiter.acquire(key).allowed:
                allowed[i] += 1
            n += 1
            if seconds == 0 and n >= per_thread:
                break

    start_evt.wait(30)
    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    began = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ended = time.time()
    with open(out, "w") as f:
        f.write(f"{sum(allowed)} {began} {ended}")


def set_rate_then_exit(url: str, prefix: str, name: str) -> None:
    import redis

    from distkit.ratelimit import FixedWindow, Rate, RedisBackend

    backend = RedisBackend(redis.Redis.from_url(url), prefix=prefix)
    FixedWindow(Rate(2, per_s=3600), backend=backend, name=name).set_rate(Rate(6, per_s=3600))
