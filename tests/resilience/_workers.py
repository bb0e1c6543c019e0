"""Child-process bodies for the shared-breaker test (importable by spawn)."""

from __future__ import annotations

import json
import threading
import time


class Boom(Exception):
    pass


def shared_worker(url: str, prefix: str, idx: int, threads: int, out: str, start_evt) -> None:
    import redis

    from distkit.resilience import BreakerOpenError, CircuitBreaker, RedisBreakerStore, State

    client = redis.Redis.from_url(url)
    store = RedisBreakerStore(client, prefix=prefix, flush_s=0.05)
    events: list[tuple[str, str, float]] = []
    breaker = CircuitBreaker(
        "dep", failure_rate=0.5, window_s=4, buckets=4, minimum_calls=40, open_s=2, half_open_calls=3,
        half_open_max_s=60, store=store, on_event=lambda e: events.append((e.from_state, e.to_state, time.time())),
    )
    ran = [0] * threads
    rejected_half_open = [0] * threads
    phase1_calls = 3

    @breaker
    def dependency(n: int) -> None:
        if n % 5 < 3:  # 60 % of the calls fail
            raise Boom(n)

    @breaker
    def probe(i: int) -> None:
        ran[i] += 1
        client.incr(f"{prefix}:ran")
        client.blpop([f"{prefix}:go"], timeout=30)  # hold the probe until the test has counted
        raise Boom("still down")

    def run(i: int) -> None:
        for j in range(phase1_calls):  # 12 calls per process: alone, no process reaches minimum_calls=40
            try:
                dependency((idx * threads + i) * phase1_calls + j)
            except Boom:
                pass
        deadline = time.monotonic() + 20
        while breaker.state is State.CLOSED and time.monotonic() < deadline:
            time.sleep(0.01)
        while not client.exists(f"{prefix}:stop") and time.monotonic() < deadline + 20:
            try:
                probe(i)
            except Boom:
                pass
            except BreakerOpenError as exc:
                if exc.state == "HALF_OPEN":
                    rejected_half_open[i] += 1
            time.sleep(0.005)

    start_evt.wait(60)
    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    breaker.close()
    store.close()
    with open(out, "w") as f:
        json.dump({"events": events, "ran": sum(ran), "rejected_half_open": sum(rejected_half_open)}, f)
