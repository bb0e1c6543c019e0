"""Per-call overhead of a CLOSED circuit breaker: distkit (local and shared through Redis) vs `circuitbreaker`,
`pybreaker` (in memory and with its Redis state storage) and an undecorated call, same run, interleaved turns."""

from __future__ import annotations

import os
import uuid
from typing import Any

from bench._table import Row, best_rates, print_table


def _noop() -> int:
    return 1


def main() -> None:
    import circuitbreaker
    import pybreaker

    from distkit.resilience import Bulkhead, CircuitBreaker

    url = os.environ.get("DISTKIT_REDIS_URL")
    candidates: list[tuple[str, Any]] = [
        ("undecorated call", _noop),
        ("circuitbreaker @circuit", circuitbreaker.circuit(failure_threshold=5)(_noop)),
        ("pybreaker, memory", pybreaker.CircuitBreaker(fail_max=5)(_noop)),
        ("distkit CircuitBreaker, local", CircuitBreaker("bench-local", minimum_calls=20)(_noop)),
    ]
    closers: list[Any] = []
    if url:
        import redis

        from distkit.resilience import RedisBreakerStore

        ns = f"bench-{uuid.uuid4().hex[:6]}"
        client = redis.Redis.from_url(url)
        pyb_store = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=ns)
        pyb_redis = pybreaker.CircuitBreaker(state_storage=pyb_store)(_noop)
        candidates.insert(3, ("pybreaker, CircuitRedisStorage", pyb_redis))
        store = RedisBreakerStore(client, prefix=ns, flush_s=0.1)
        shared = CircuitBreaker("bench-shared", minimum_calls=20, store=store)
        candidates.append(("distkit CircuitBreaker, RedisBreakerStore", shared(_noop)))
        closers += [shared.close, store.close, lambda: [client.delete(k) for k in client.scan_iter(f"*{ns}*")]]
    else:
        print("DISTKIT_REDIS_URL is not set: measuring the in-memory breakers only (run `make bench`)")
    candidates.append(("distkit Bulkhead (for scale)", Bulkhead("bench", max_concurrent=16)(_noop)))

    rates = best_rates(candidates, rounds=8, seconds=4.0)
    base_us = 1e6 / rates["undecorated call"]
    rows = []
    for name, value in rates.items():
        overhead = 1e6 / value - base_us
        note = "" if name == "undecorated call" else f"{overhead:.3f} µs overhead/call"
        rows.append(Row("CLOSED breaker, one thread", name, value, "calls/s", note))
    print_table("circuit breaker per-call overhead (ratio vs circuitbreaker)", rows, baseline="circuitbreaker")
    for close in closers:
        close()
