"""The five algorithms as pure functions over a small state, in integer microseconds.

Each has a twin Lua script (``lua/<name>.lua``) with the same arithmetic; the memory backend calls the
Python function, the Redis backends the script. Every function returns ``(new_state_or_None, raw)`` where
``raw = (allowed, remaining, retry_after_us, reset_after_us, delay_us)`` and ``None`` means "unchanged".
"""

from __future__ import annotations

import functools
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

Raw = tuple[int, int, float, float, float]


@dataclass(frozen=True)
class Params:
    """What a script needs besides the key: limit (burst/capacity/count), period and interval in µs."""

    limit: int
    period_us: int
    interval_us: float
    queue: bool = False
    warmup_us: int = 0

    @functools.cached_property
    def ttl_us(self) -> float:
        """How long state stays meaningful: two periods (sliding counter) or the bucket's drain time."""
        return 2 * max(self.period_us, self.interval_us * self.limit) + self.warmup_us

    @functools.cached_property
    def args(self) -> list[bytes]:
        """The scripts' third argument: all parameters packed in one value (fewer bytes to encode per call)."""
        return [
            f"{self.limit} {self.period_us} {self.interval_us!r} {1 if self.queue else 0} {self.warmup_us}".encode()
        ]


def warm_up(state: Any, now: int, p: Params) -> tuple[float, float, float, float]:
    """Guava-style warm-up: after ``warmup_us`` of idleness the bucket is cold. A cold bucket admits one request
    at a time at a third of the rate, rising linearly to the full rate (and burst) over ``warmup_us`` of use.
    Returns ``(tat, warm_start, interval, tolerance)``."""
    tat, warm_start = state if state is not None else (now, now)
    if tat < now - p.warmup_us:
        warm_start = now
    factor = min(1.0, (1 + 2 * (now - warm_start) / p.warmup_us) / 3)
    t = p.interval_us / factor
    return tat, warm_start, t, t * (p.limit if factor >= 1 else 1)


def gcra(state: Any, now: int, cost: int, p: Params) -> tuple[Any, Raw]:
    """Generic cell rate algorithm (redis-cell): state is the theoretical arrival time (µs), plus the start
    of the current warm period when warm-up is on."""
    if p.warmup_us:
        state, warm_start, t, dvt = warm_up(state, now, p)
    else:
        warm_start, t, dvt = None, p.interval_us, p.interval_us * p.limit
    tat = max(state if state is not None else now, now)
    if p.queue:  # leaky bucket as a queue: allowed with a delay, spaced exactly one interval apart
        delay = tat - now
        new_tat = tat + t * cost
        if cost == 0:
            return None, (1, max(0, math.floor((dvt - delay) / t)), 0.0, delay, delay)
        if new_tat - now <= dvt:
            return new_tat, (1, max(0, math.floor((dvt - (new_tat - now)) / t)), 0.0, new_tat - now, delay)
        return None, (0, max(0, math.floor((dvt - delay) / t)), new_tat - now - dvt, delay, 0.0)
    remaining_now = max(0, min(p.limit, math.floor((now - (tat - dvt)) / t)))
    if cost == 0:
        return None, (
            1 if remaining_now >= 1 else 0,
            remaining_now,
            0.0 if remaining_now else tat - dvt + t - now,
            tat - now,
            0.0,
        )
    new_tat = tat + t * cost
    diff = now - (new_tat - dvt)
    if diff < 0:
        return None, (0, remaining_now, -diff, tat - now, 0.0)
    return (new_tat if warm_start is None else (new_tat, warm_start)), (
        1,
        math.floor(diff / t),
        0.0,
        new_tat - now,
        0.0,
    )


def fixed_window(state: Any, now: int, cost: int, p: Params) -> tuple[Any, Raw]:
    """Counter per window ``floor(now / period)``; state ``(window, count)``."""
    window = now // p.period_us
    count = state[1] if state is not None and state[0] == window else 0
    reset = (window + 1) * p.period_us - now
    if count + cost <= p.limit:
        if cost == 0:
            return None, (1 if count < p.limit else 0, p.limit - count, 0.0 if count < p.limit else reset, reset, 0.0)
        return (window, count + cost), (1, p.limit - count - cost, 0.0, reset, 0.0)
    return None, (0, p.limit - count, reset, reset, 0.0)


def sliding_window_counter(state: Any, now: int, cost: int, p: Params) -> tuple[Any, Raw]:
    """Cloudflare's approximation: previous window's count weighted by its overlap, plus the current one."""
    period = p.period_us
    window = now // period
    cur, prev = 0, 0
    if state is not None:
        if state[0] == window:
            cur, prev = state[1], state[2]
        elif state[0] == window - 1:
            prev = state[1]
    elapsed = now - window * period
    weight = (period - elapsed) / period
    estimate = prev * weight + cur
    reset = (window + (2 if cur > 0 else 1)) * period - now
    if cost > 0 and estimate + cost <= p.limit:
        return (window, cur + cost, prev), (1, max(0, math.floor(p.limit - estimate - cost)), 0.0, reset, 0.0)
    remaining = max(0, math.floor(p.limit - estimate))
    if cost == 0:
        return None, (1 if remaining >= 1 else 0, remaining, 0.0, reset, 0.0)
    room = p.limit - cur - cost
    if prev > 0 and room >= 0:  # wait until the previous window's weight has decayed enough
        retry = period * (1 - room / prev) - elapsed
    else:  # wait for the next window, where this window's count becomes the weighted one
        nxt = p.limit - cost
        retry = (period - elapsed) + (period * (1 - nxt / cur) if cur > 0 and nxt < cur else 0)
    return None, (0, remaining, max(1.0, retry), reset, 0.0)


def sliding_window_log(state: Any, now: int, cost: int, p: Params) -> tuple[Any, Raw]:
    """Exact: the timestamps of requests within the last period, newest first (at most ``limit``).

    Trimming is amortised O(1); the state is at most ``limit`` entries (never O(limit) work per call)."""
    log: deque[int] = state if state is not None else deque()
    horizon = now - p.period_us
    while log and log[-1] <= horizon:
        log.pop()
    n = len(log)
    reset = (log[0] + p.period_us - now) if log else 0
    if n + cost <= p.limit:
        if cost == 0:
            return log, (1 if n < p.limit else 0, p.limit - n, 0.0, reset, 0.0)
        for _ in range(cost):
            log.appendleft(now)
        return log, (1, p.limit - n - cost, 0.0, p.period_us, 0.0)
    needed = n + cost - p.limit
    retry = log[-needed] + p.period_us - now
    return log, (0, p.limit - n, float(retry), reset, 0.0)
