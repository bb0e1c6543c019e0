"""distkit.locks against redis-py ``Lock``, python-redis-lock and pottery ``Redlock``, measured in one run.

* uncontended acquire + release cycles/s on one connection (rounds interleaved across implementations, median
  taken, so a noisy neighbour hurts everyone alike);
* contended handoff latency: a waiter process is blocked in ``acquire``; the time from the holder's
  ``release()`` call to the waiter's ``acquire()`` returning (``time.monotonic_ns`` is system-wide on Linux).
  Implementations take turns in blocks of samples, each with its own waiter process.

Run: ``python -m bench locks`` with ``DISTKIT_REDIS_URL`` set.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench._table import Row, percentiles, print_table, rate, record_series
from distkit.config import Settings

PEERS = ("distkit", "redis-py", "python-redis-lock", "pottery")
NOTES = {
    "distkit": "reentrant, fenced, watchdog, pub/sub wake-up",
    "distkit (lease_ms=30000)": "reentrant, fenced, fixed lease",
    "distkit fair_lock": "FIFO among waiters",
    "redis-py": "not reentrant; waiters poll every 100 ms",
    "python-redis-lock": "not reentrant; BLPOP wake-up",
    "pottery": "Redlock on 1 master",
}
HANDOFF_SAMPLES = {"distkit": 300, "python-redis-lock": 300, "redis-py": 40, "pottery": 40}


def make_lock(impl: str, client: Any, namespace: str, name: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(acquire, release) of one implementation: blocking acquire, 30 s expiry where there is one."""
    if impl.startswith("distkit"):
        from distkit.locks import Locks

        locks = Locks(client, namespace=namespace)
        if impl == "distkit fair_lock":
            fair = locks.fair_lock(name)
            return fair.acquire, fair.release
        lock = locks.lock(name)
        if impl == "distkit (lease_ms=30000)":
            return lambda: lock.acquire(lease_ms=30_000), lock.release
        return lock.acquire, lock.release
    if impl == "redis-py":
        rlock = client.lock(f"{namespace}:{name}", timeout=30)
        return rlock.acquire, rlock.release
    if impl == "python-redis-lock":
        import redis_lock

        plock = redis_lock.Lock(client, f"{namespace}:{name}", expire=30)
        return plock.acquire, plock.release
    if impl == "pottery":
        from pottery import Redlock

        red = Redlock(key=f"{namespace}:{name}", masters={client}, auto_release_time=30)
        return red.acquire, red.release
    raise ValueError(impl)


def uncontended(client: Any, namespace: str, rounds: int = 9, seconds: float = 0.3) -> list[Row]:
    impls = ["distkit", "distkit (lease_ms=30000)", "distkit fair_lock", "redis-py", "python-redis-lock", "pottery"]
    cycles = {}
    for impl in impls:
        acquire, release = make_lock(impl, client, namespace, f"u-{impl}")

        def cycle(acquire: Callable[[], Any] = acquire, release: Callable[[], Any] = release) -> None:
            acquire()
            release()

        cycles[impl] = cycle
    samples: dict[str, list[float]] = {impl: [] for impl in impls}
    for _ in range(rounds):  # interleaved, so a noisy neighbour hurts every implementation alike
        for impl in impls:
            samples[impl].append(rate(cycles[impl], seconds=seconds, warmup=20))
    return [
        Row("uncontended acquire+release", impl, statistics.median(samples[impl]), "cycles/s", NOTES[impl])
        for impl in impls
    ]


def uncontended_async(url: str, namespace: str, n: int = 2_000) -> list[Row]:
    import redis.asyncio as aredis

    from distkit.locks import AsyncLocks

    async def run() -> list[Row]:
        client = aredis.Redis.from_url(url)
        async with AsyncLocks(client, namespace=namespace) as alocks:
            lock = alocks.lock("async")
            peer = client.lock(f"{namespace}:async-peer", timeout=30)
            results: dict[str, list[float]] = {"distkit": [], "redis-py": []}
            for _ in range(5):
                for impl, acquire, release in (
                    ("distkit", lock.acquire, lock.release),
                    ("redis-py", peer.acquire, peer.release),
                ):
                    t0 = time.perf_counter()
                    for _ in range(n // 5):
                        await acquire()
                        await release()
                    results[impl].append(n // 5 / (time.perf_counter() - t0))
        await client.aclose()
        return [
            Row("uncontended acquire+release, asyncio", impl, statistics.median(v), "cycles/s", NOTES[impl])
            for impl, v in results.items()
        ]

    return asyncio.run(run())


def _waiter(impl: str, url: str, namespace: str, go: Any, done: Any, samples: int) -> None:
    """Child process: block in acquire after each ``go``, report when it returned, release."""
    import redis

    client = redis.Redis.from_url(url)
    acquire, release = make_lock(impl, client, namespace, f"handoff-{impl}")
    for _ in range(samples):
        go.wait()
        go.clear()
        acquire()
        acquired = time.monotonic_ns()
        release()
        done.send(acquired)


class _Handoff:
    """One implementation's holder (this process) and waiter (a child process, started once)."""

    def __init__(self, impl: str, url: str, namespace: str, samples: int) -> None:
        import redis

        ctx = multiprocessing.get_context("spawn")
        self.impl, self.left = impl, samples
        self.go, (self.mine, theirs) = ctx.Event(), ctx.Pipe()
        self.child = ctx.Process(target=_waiter, args=(impl, url, namespace, self.go, theirs, samples), daemon=True)
        self.client = redis.Redis.from_url(url)
        self.acquire, self.release = make_lock(impl, self.client, namespace, f"handoff-{impl}")
        self.latencies: list[float] = []
        self.child.start()

    def sample(self, n: int) -> None:
        """``n`` handoffs: hold the lock, let the waiter block on it, time release() -> the waiter's acquire()."""
        for _ in range(min(n, self.left)):
            first = not self.latencies
            self.acquire()
            self.go.set()
            time.sleep(0.5 if first else 0.012)  # let the waiter block (first time: the child is still starting)
            released = time.monotonic_ns()
            self.release()
            if not self.mine.poll(30):
                raise RuntimeError(f"{self.impl}: the waiter never acquired")
            self.latencies.append((self.mine.recv() - released) / 1e9)
            self.left -= 1

    def close(self) -> None:
        self.child.join(10)
        self.client.close()


def handoff(impls: list[str], url: str, namespace: str, block: int = 20) -> dict[str, list[float]]:
    """Handoff latencies (seconds) from ``release()`` in this process to ``acquire()`` returning in another,
    per implementation. Blocks of ``block`` samples alternate between the implementations, so the machine's
    slow and fast phases (large on a small VM) fall on each of them alike."""
    pairs = [_Handoff(impl, url, namespace, HANDOFF_SAMPLES[impl]) for impl in impls]
    try:
        while any(p.left for p in pairs):
            for p in pairs:
                p.sample(block)
    finally:
        for p in pairs:
            p.close()
    return {p.impl: p.latencies for p in pairs}


def main() -> None:
    settings = Settings.from_env()
    url = settings.redis_url
    if not url:
        raise SystemExit("DISTKIT_REDIS_URL is not set (make bench starts the servers)")
    client = settings.redis()
    namespace = f"bench-locks-{uuid.uuid4().hex[:6]}"
    rows = uncontended(client, namespace)
    rows += uncontended_async(url, namespace)
    measured = handoff(["distkit", "python-redis-lock"], url, namespace)  # the close contest: interleaved
    measured |= handoff(["redis-py", "pottery"], url, namespace, block=10)  # ~0.1 s a sample: polling
    for impl in PEERS:
        latencies = measured[impl]
        record_series("locks.handoff", impl, latencies)  # the report's latency CDF (bench/results/)
        p50, p99 = percentiles(latencies)
        rows.append(Row("contended handoff p50", impl, p50, "ms", NOTES[impl]))
        rows.append(Row("contended handoff p99", impl, p99, "ms", f"{HANDOFF_SAMPLES[impl]} samples"))
    for k in client.scan_iter(match=f"*{namespace}*", count=1000):
        client.delete(k)
    print_table("distkit.locks vs peers (one Redis connection each, same run)", rows, baseline="redis-py")


if __name__ == "__main__":
    main()
