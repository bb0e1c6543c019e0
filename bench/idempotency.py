"""@idempotent on Redis: throughput and Redis calls per operation, next to the raw handler and a naive
``SET NX`` + ``SET`` guard, in the same run."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable
from typing import Any

from bench._table import Row, print_table, rate
from distkit.idempotency import RedisIdempotencyStore, idempotent


class _RoundTrips:
    """Counts commands the client sends (one per round trip here: no pipelines on these paths)."""

    def __init__(self, r: Any) -> None:
        self.n = 0
        original = r.execute_command

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.n += 1
            return original(*args, **kwargs)

        r.execute_command = counted


def _measure(trips: _RoundTrips, fn: Callable[[], object]) -> tuple[float, float]:
    """(ops/s, round trips per op)."""
    before, n = trips.n, 2000
    for _ in range(n):
        fn()
    per_op = (trips.n - before) / n
    return rate(fn, seconds=1.0), per_op


def main() -> None:
    url = os.environ.get("DISTKIT_REDIS_URL")
    if not url:
        print("DISTKIT_REDIS_URL is not set; skipping the idempotency benchmark (run `make bench`)")
        return
    import redis

    r = redis.Redis.from_url(url)
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    trips = _RoundTrips(r)
    store = RedisIdempotencyStore(r, prefix=prefix)
    counter = itertools.count()

    def raw(order_id: str) -> dict[str, str]:
        return {"order": order_id}

    guarded = idempotent(store, key="order_id", ttl_s=600)(raw)

    def naive(order_id: str) -> Any:
        k = f"{{{prefix}}}:naive:{order_id}"
        if not r.set(k, "in-progress", nx=True, ex=600):
            return r.get(k)  # no in-progress handling, no payload check, no typed result
        result = raw(order_id)
        r.set(k, str(result), ex=600)
        return result

    rows: list[Row] = []
    ops, per = _measure(trips, lambda: raw(str(next(counter))))
    rows.append(Row("first delivery", "raw handler (no guard)", ops, "ops/s", f"{per:.1f} round trips/op"))
    ops, per = _measure(trips, lambda: naive(f"n{next(counter)}"))
    rows.append(Row("first delivery", "naive SET NX + SET", ops, "ops/s", f"{per:.1f} round trips/op"))
    ops, per = _measure(trips, lambda: guarded(f"g{next(counter)}"))
    rows.append(Row("first delivery", "distkit @idempotent", ops, "ops/s", f"{per:.1f} round trips/op"))
    naive("dup")
    guarded("dup")
    ops, per = _measure(trips, lambda: naive("dup"))
    rows.append(Row("duplicate delivery", "naive SET NX + SET", ops, "ops/s", f"{per:.1f} round trips/op"))
    ops, per = _measure(trips, lambda: guarded("dup"))
    rows.append(Row("duplicate delivery", "distkit @idempotent", ops, "ops/s", f"{per:.1f} round trips/op"))
    for k in r.scan_iter(match=f"*{prefix}*", count=1000):
        r.delete(k)
    print_table("idempotency on Redis (one sync connection, same run)", rows, baseline="naive")


if __name__ == "__main__":
    main()
