"""The Redis call path (distkit._redis.Runner) against redis-py's own ``evalsha`` and the private-connection lane
distkit used before the call policy (its own sockets, no pool limits, no deadline): same run, same Redis, same
script. Also: the cost of a call while the client's outage breaker is open, and of the telemetry hook."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from typing import Any

from bench._table import Row, best_rates, print_table

SOURCE = "return redis.call('INCR', KEYS[1])"


def _script() -> Any:
    """A :class:`distkit._redis.Script` from inline source (modules load theirs from ``lua/`` files)."""
    from distkit._redis import Script

    script = Script.__new__(Script)
    script.name, script.source = "bench/incr", SOURCE
    script.sha = hashlib.sha1(SOURCE.encode()).hexdigest()
    return script


class PrivateLane:
    """The pre-policy lane, condensed: private connections made from the pool's settings, one packed write,
    redis-py's parser; ignores max_connections, retry=, health checks and client.close()."""

    def __init__(self, client: Any) -> None:
        from distkit._redis.direct import DirectLane

        self._packer = DirectLane.for_client(client)
        self._pool = client.connection_pool
        self._idle: list[Any] = []

    def call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        assert self._packer is not None
        payload = self._packer.pack_call(script, keys, args)
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self._pool.connection_class(**self._pool.connection_kwargs)
        try:
            conn.send_packed_command([payload], check_health=False)
            reply = conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        self._idle.append(conn)
        return reply

    def close(self) -> None:
        for conn in self._idle:
            conn.disconnect()


def _async_rows(url: str, script: Any, k: str) -> list[Row]:
    """The asyncio twin: AsyncRunner vs ``redis.asyncio`` ``evalsha``, interleaved turns in one event loop."""
    import asyncio

    import redis.asyncio as aredis

    from distkit._redis import AsyncRunner

    async def measure() -> list[Row]:
        client = aredis.Redis.from_url(url)
        runner = AsyncRunner(client)
        impls = [
            ("redis.asyncio evalsha", lambda: client.evalsha(script.sha, 1, k)),
            ("distkit AsyncRunner (client's pool)", lambda: runner(script, [k], [])),
        ]
        best = dict.fromkeys((name for name, _ in impls), 0.0)
        for _ in range(5):
            for name, fn in impls:
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < 0.3:
                    await fn()
                    n += 1
                best[name] = max(best[name], n / (time.perf_counter() - t0))
        await client.aclose()
        return [Row("one script call, asyncio", name, value, "calls/s") for name, value in best.items()]

    return asyncio.run(measure())


def main() -> None:
    url = os.environ.get("DISTKIT_REDIS_URL")
    if not url:
        print("DISTKIT_REDIS_URL is not set; skipping the plumbing benchmark (run `make bench`)")
        return
    import redis

    from distkit._redis import Runner, telemetry
    from distkit._redis.policy import Breaker

    client = redis.Redis.from_url(url)
    client.script_load(SOURCE)
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    k = f"{{{ns}}}:n"
    runner = Runner(client)
    old = PrivateLane(client)
    script = _script()
    own_path = Runner(client, direct=False)
    rows: list[Row] = []

    rates = best_rates(
        [
            ("redis-py evalsha", lambda: client.evalsha(script.sha, 1, k)),
            ("private-connection lane (before)", lambda: old.call(script, [k], [])),
            ("distkit Runner (client's pool)", lambda: runner(script, [k], [])),
            ("distkit Runner, direct=False", lambda: own_path(script, [k], [])),
        ]
    )
    for name, value in rates.items():
        rows.append(Row("one script call, one caller", name, value, "calls/s"))

    seen = []
    remove = telemetry.on_call(seen.append)
    try:
        listened = best_rates([("distkit Runner + on_call listener", lambda: runner(script, [k], []))], rounds=3)
    finally:
        remove()
    base = rates["distkit Runner (client's pool)"]
    rows.append(Row("telemetry cost", "distkit Runner (nothing listening)", base, "calls/s"))
    for name, value in listened.items():
        rows.append(Row("telemetry cost", name, value, "calls/s"))
    n = 200_000
    t0 = time.perf_counter()
    for _ in range(n):
        telemetry.enabled()
    checks_per_s = n / (time.perf_counter() - t0)
    rows.append(Row("telemetry cost", "the per-call check, nothing configured", checks_per_s, "checks/s"))

    rows.extend(_async_rows(url, script, k))

    # a call while the breaker is open: the outage costs microseconds, not a timeout
    dead = redis.Redis(host="127.0.0.1", port=1)
    dead_runner = Runner(dead)
    breaker: Breaker = dead_runner.breaker
    breaker.configure(threshold=1, base_s=3600, cap_s=3600)

    def failing() -> None:
        try:
            dead_runner(script, [k], [])
        except redis.ConnectionError:
            pass

    failing()
    assert breaker.is_open
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        failing()
    per_call_us = (time.perf_counter() - t0) / n * 1e6
    rows.append(Row("failing call, breaker open", "distkit Runner (CircuitOpenError)", per_call_us / 1000, "ms"))

    old.close()
    client.delete(k)
    client.close()
    print_table(
        "redis plumbing (one sync caller, same run, same Redis; best of 5 interleaved turns; ratio vs first row)",
        rows,
    )


if __name__ == "__main__":
    main()
