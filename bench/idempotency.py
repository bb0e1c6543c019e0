"""@idempotent on Redis: throughput and Redis round trips per operation, next to the raw handler and a naive
``SET NX`` + ``SET`` guard, in the same run."""

from __future__ import annotations

import itertools
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench._table import Row, best_rates, print_table
from distkit.idempotency import LocalCache, RedisIdempotencyStore, idempotent


class _RoundTrips:
    """Counts round trips: the naive guard's commands (``execute_command``) and the store's script calls (its
    direct lane's writes, or the client's commands when it has no lane). No pipelines on these paths."""

    def __init__(self, r: Any, store: RedisIdempotencyStore) -> None:
        self.n = 0
        original = r.execute_command

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.n += 1
            return original(*args, **kwargs)

        r.execute_command = counted
        lane = store._run.lane
        if lane is not None:
            roundtrip = lane.roundtrip

            def counted_lane(payload: bytes, replies: int, deadline: float, what: str) -> tuple[list[Any], int]:
                self.n += 1
                return roundtrip(payload, replies, deadline, what)

            lane.roundtrip = counted_lane

    def per_op(self, fn: Callable[[], object], n: int = 2000) -> float:
        before = self.n
        for _ in range(n):
            fn()
        return (self.n - before) / n


def main() -> None:
    url = os.environ.get("DISTKIT_REDIS_URL")
    if not url:
        print("DISTKIT_REDIS_URL is not set; skipping the idempotency benchmark (run `make bench`)")
        return
    import redis

    r = redis.Redis.from_url(url)
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    store = RedisIdempotencyStore(r, prefix=prefix)
    trips = _RoundTrips(r, store)
    counter = itertools.count()

    def raw(order_id: str) -> dict[str, str]:
        return {"order": order_id}

    guarded = idempotent(store, key="order_id", ttl_s=600)(raw)
    cached = idempotent(store, key="order_id", ttl_s=600, local_cache=LocalCache(), scope="cached")(raw)

    def naive(order_id: str) -> Any:
        k = f"{{{prefix}}}:naive:{order_id}"
        if not r.set(k, "in-progress", nx=True, ex=600):
            return r.get(k)  # no in-progress handling, no payload check, no typed result
        result = raw(order_id)
        r.set(k, str(result), ex=600)
        return result

    rows: list[Row] = []

    def group(work: str, *impls: tuple[str, Callable[[], object]]) -> None:
        per = {name: trips.per_op(fn) for name, fn in impls}
        for name, ops in best_rates(impls, rounds=10, seconds=3.0).items():
            rows.append(Row(work, name, ops, "ops/s", f"{per[name]:.1f} round trips/op"))

    group(
        "first delivery",
        ("raw handler (no guard)", lambda: raw(str(next(counter)))),
        ("naive SET NX + SET", lambda: naive(f"n{next(counter)}")),
        ("distkit @idempotent", lambda: guarded(f"g{next(counter)}")),
    )
    naive("dup")
    guarded("dup")
    cached("dup")
    group(
        "duplicate delivery",
        ("naive SET NX + SET", lambda: naive("dup")),
        ("distkit @idempotent", lambda: guarded("dup")),
        ("distkit + LocalCache", lambda: cached("dup")),
    )
    medians = _interleaved_medians(
        {
            ("first delivery", "naive SET NX + SET"): lambda: naive(f"n{next(counter)}"),
            ("first delivery", "distkit @idempotent"): lambda: guarded(f"g{next(counter)}"),
            ("duplicate delivery", "naive SET NX + SET"): lambda: naive("dup"),
            ("duplicate delivery", "distkit @idempotent"): lambda: guarded("dup"),
        }
    )
    for k in r.scan_iter(match=f"*{prefix}*", count=1000):
        r.delete(k)
    store.close()
    title = "idempotency on Redis (one sync caller, same run; best of 10 interleaved turns)"
    print_table(title, rows, baseline="naive")
    lat_rows = [Row(work, impl, ms, "ms", "p50 per call") for (work, impl), ms in medians.items()]
    print_table("idempotency on Redis: per-call median, the four paths interleaved call by call", lat_rows)


def _interleaved_medians(paths: dict[tuple[str, str], Callable[[], object]], n: int = 2000) -> dict[Any, float]:
    """p50 latency (ms) of each path, calling them in turn (A B C D A B ...): on a shared machine every path sees
    the same noise, so the ratio of medians is steadier than one of best turns."""
    samples: dict[Any, list[float]] = {k: [] for k in paths}
    for _ in range(n):
        for k, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1000 for k, v in samples.items()}


if __name__ == "__main__":
    main()
