"""Sync and async limiters have precise return types: a forgotten ``await`` fails ``mypy --strict``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SNIPPET = textwrap.dedent(
    """
    import redis
    import redis.asyncio as aredis
    from distkit.ratelimit import (AsyncRedisBackend, Decision, FixedWindow, LeakyBucket, Rate, RedisBackend,
        TokenBucket)

    sync_lim = TokenBucket(Rate(5), backend=RedisBackend(redis.Redis()))
    mem_lim = FixedWindow(Rate(5))
    edge = LeakyBucket.nginx("5r/s", burst=3)
    async_lim = TokenBucket(Rate(5), backend=AsyncRedisBackend(aredis.Redis()))

    d1: Decision = sync_lim.acquire("k")
    d2: Decision = mem_lim.peek("k")
    d3: Decision = edge.wait("k", timeout=1.0)
    many: list[Decision] = sync_lim.acquire_many([("a", 1)])
    sync_lim.set_rate(Rate(6))

    async def fine() -> bool:
        d = await async_lim.acquire("k")
        ds = await async_lim.acquire_many([("a", 1)])
        await async_lim.set_rate(Rate(6))
        return d.allowed and ds[0].allowed

    def forgot_await() -> None:
        print(async_lim.acquire("k").allowed)  # forgot
        print(async_lim.peek("k").remaining)  # forgot
        for d in async_lim.acquire_many([("a", 1)]):  # forgot
            print(d)
    """
)


@pytest.mark.slow
def test_a_forgotten_await_fails_mypy(tmp_path):
    src = tmp_path / "snippet.py"
    src.write_text(SNIPPET)
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), str(src)],
        capture_output=True,
        text=True,
        timeout=170,
    )
    errors = [line for line in res.stdout.splitlines() if ": error:" in line]
    lines = sorted({int(line.split(":")[1]) for line in errors})
    forgot = [i for i, line in enumerate(SNIPPET.splitlines(), 1) if line.endswith("# forgot")]
    assert lines == forgot, res.stdout  # exactly the forgotten awaits, nothing in the correct code
    assert all("Awaitable" in e for e in errors), res.stdout
