"""Decisions during an outage, with a *default* redis-py client (10 retries with backoff, no socket timeout):
every decision returns within the backend's deadline + 250 ms and FAIL_OPEN answers, against a killed Redis and
against a black-holed one (a TCP listener that accepts and never answers).

The bound comes from ``distkit._redis.Runner`` (deadlines, distkit's own retries, the per-client outage breaker).
The limiter's own side (only outages reach the policy, the policy is cheap, nothing else blocks) is tested without
the Runner in test_hardening.py.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time

import pytest
import redis

from distkit.ratelimit import Rate, RedisBackend, TokenBucket


@pytest.fixture
def black_hole():
    """A loopback port that accepts connections and never reads or answers; closes them all at teardown."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                accepted.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    for c in accepted:
        c.close()
    srv.close()


def _timed_decisions(lim, n: int, budget_s: float) -> list[tuple[float, str]]:
    """``n`` decisions in a worker thread; each must come back within ``budget_s`` (else the test fails fast)."""
    out: list[tuple[float, str]] = []
    done = threading.Event()

    def run() -> None:
        for _ in range(n):
            t0 = time.monotonic()
            d = lim.acquire("k")
            out.append((time.monotonic() - t0, d.fallback))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    done.wait(budget_s * n + 1)
    assert len(out) == n, f"{len(out)} of {n} decisions came back within {budget_s:.2f} s each"
    return out


def test_a_black_holed_redis_costs_at_most_the_deadline(black_hole):
    client = redis.Redis(host="127.0.0.1", port=black_hole)  # default retries, no socket timeout
    lim = TokenBucket(Rate(10), backend=RedisBackend(client, prefix="bh", timeout_s=0.5), on_backend_error="fail_open")
    results = _timed_decisions(lim, 3, 0.5 + 0.25)
    assert all(took <= 0.75 and fallback == "fail_open" for took, fallback in results), results


@pytest.mark.parametrize("direct", [True, False], ids=["default", "direct=False"])
def test_a_killed_redis_costs_at_most_the_deadline_then_microseconds(private_redis, direct):
    client = redis.Redis.from_url(private_redis.url)  # default retries with backoff
    backend = RedisBackend(client, prefix="kr", timeout_s=0.5, direct=direct)
    lim = TokenBucket(Rate(10), backend=backend, on_backend_error="fail_open")
    assert lim.acquire("k").fallback == ""
    private_redis.stop()
    # the bound is deadline + 250 ms; on a loaded 2-core CI machine a thread can wait longer than that for
    # a core, so this allows a second of scheduling noise (a client retry storm would take 10+ s)
    results = _timed_decisions(lim, 50, 0.5 + 1.0)
    assert all(fallback == "fail_open" for _, fallback in results)
    assert statistics.median(took for took, _ in results[5:]) < 0.02  # refused at once, or the breaker is open
    backend.close()
