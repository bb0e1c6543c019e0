"""The algorithms as pure functions over a small state, in integers.

Each has a twin Lua script (``lua/<name>.lua``) with the same arithmetic; the memory backend calls the
Python function, the Redis backends the script. Every function returns ``(new_state_or_None, raw)`` where
``raw = (allowed, remaining, retry_after_us, reset_after_us, delay_us)`` (whole µs, rounded up) and ``None``
means "unchanged". ``reset_after_us`` is also the time after which the state is equivalent to no state at all
(the memory backend evicts by it; Redis keys expire by it).

Exactness. GCRA keeps its theoretical arrival time as whole µs plus a remainder in *ticks* of ``1/count`` µs,
so the emission interval ``period_us / count`` is exactly ``period_us`` ticks: no float ever touches a time, and
``n`` requests at one instant on ``Rate(n, per_s=1)`` with ``burst=n`` admit exactly ``n`` (a float TAT near
today's epoch, 1.8e15 µs, has a spacing of 0.25 µs and lost the last token for 71 of the first 200 rates).
Every product stays below 2**53, so the Lua twin (doubles) computes the same integers; :class:`Params` checks it.
"""

from __future__ import annotations

import functools
import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any

Raw = tuple[int, int, int, int, int]
SAFE = 2**53  # integers below this are exact in a double (Lua's only number type in Redis)
LOG_TRIM = 1000  # sliding log: at most this many expired entries are removed per decision (bounded work)


@dataclass(frozen=True)
class Params:
    """What a script needs besides the key: limit (burst/capacity/count), period in µs, count, and the mode.

    ``mode``: ``"gcra"`` (meter), ``"queue"`` (leaky queue), ``"warm"`` (Guava SmoothWarmingUp),
    ``"nginx"`` (nginx ``limit_req``; ``limit`` is the burst, ``delay`` the delay threshold in requests)."""

    limit: int
    period_us: int
    count: int
    mode: str = "gcra"
    warmup_us: int = 0
    delay: int = 0

    @functools.cached_property
    def args(self) -> list[bytes]:
        """The scripts' second argument: all parameters packed in one value (fewer bytes to encode per call)."""
        return [f"{self.limit} {self.period_us} {self.count} {self.mode} {self.warmup_us} {self.delay}".encode()]

    @functools.cached_property
    def nginx_rate(self) -> int:
        """nginx's ``ctx->rate``: requests per second in thousandths, rounded down as nginx does for r/m."""
        return self.count * 1000 * 1_000_000 // self.period_us


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------------------------------------- GCRA
def gcra(state: Any, now: int, cost: int, p: Params) -> tuple[Any, Raw]:
    """Generic cell rate algorithm (redis-cell's ``CL.THROTTLE``), exact in ticks of ``1/count`` µs.

    State: ``(tat_us, tat_ticks)``, the theoretical arrival time. ``lag`` = TAT - now in ticks; the interval
    is ``period_us`` ticks and the tolerance ``limit * period_us`` ticks."""
    mode = p.mode
    if mode == "warm":
        return warming_up(state, now, cost, p)
    if mode == "nginx":
        return nginx(state, now, cost, p)
    c, t = p.count, p.period_us
    dvt = p.limit * t
    lag = 0
    if state is not None:
        lag = (state[0] - now) * c + state[1]
        lag = max(lag, 0)
    if mode == "queue":  # leaky bucket as a queue: allowed with a delay, spaced exactly one interval apart
        delay = ceil_div(lag, c)
        free = dvt - lag
        if cost == 0:
            return None, (1, free // t if free > 0 else 0, 0, delay, delay)
        new_lag = lag + cost * t
        if new_lag <= dvt:
            return (now + new_lag // c, new_lag % c), (1, (dvt - new_lag) // t, 0, ceil_div(new_lag, c), delay)
        return None, (0, free // t if free > 0 else 0, ceil_div(new_lag - dvt, c), delay, 0)
    free = dvt - lag
    remaining_now = free // t if free > 0 else 0
    remaining_now = min(remaining_now, p.limit)
    if cost == 0:
        if remaining_now >= 1:
            return None, (1, remaining_now, 0, ceil_div(lag, c), 0)
        return None, (0, 0, ceil_div(lag + t - dvt, c), ceil_div(lag, c), 0)
    new_lag = lag + cost * t
    if new_lag > dvt:
        return None, (0, remaining_now, ceil_div(new_lag - dvt, c), ceil_div(lag, c), 0)
    return (now + new_lag // c, new_lag % c), (1, (dvt - new_lag) // t, 0, ceil_div(new_lag, c), 0)


# ------------------------------------------------------------------------------------------ warm-up
def warm_model(p: Params) -> tuple[float, float, float, float, float]:
    """Guava ``SmoothWarmingUp`` (cold factor 3): ``(stable, threshold, max_permits, slope, cool_down)``."""
    stable = p.period_us / p.count
    cold = stable * 3.0
    threshold = 0.5 * p.warmup_us / stable
    max_permits = threshold + 2.0 * p.warmup_us / (stable + cold)
    slope = (cold - stable) / (max_permits - threshold)
    return stable, threshold, max_permits, slope, p.warmup_us / max_permits


def _wait_for_stored(stored: float, take: float, stable: float, threshold: float, slope: float) -> int:
    """Guava's ``storedPermitsToWaitTime``: the area under the interval curve between stored-take and stored."""
    above = stored - threshold
    micros = 0
    if above > 0.0:
        take_above = min(above, take)
        length = (stable + above * slope) + (stable + (above - take_above) * slope)
        micros = math.floor(take_above * length / 2.0)
        take -= take_above
    return micros + math.floor(stable * take)


def warming_up(state: Any, now: int, cost: int, p: Params) -> tuple[Any, Raw]:
    """Guava's ``SmoothWarmingUp`` as ``tryAcquire(cost, 0)``: allowed iff the next free ticket is due; the
    allowed request is served at once and pushes the next ticket by the time its permits cost (stored permits
    above the threshold cost more: from 3x the interval when cold down to 1x). A fresh key starts cold
    (``stored = max_permits``) like a new Guava limiter. State: ``(next_free_us, stored_permits, max_permits)``.

    A rate change (``set_rate``) is applied as Guava's ``setRate``: resync at the old rate, then stored permits are
    rescaled by ``new_max / old_max`` — lazily, at the key's next decision (so idle time between the change and that
    decision still counts at the old rate, where Guava would switch at the change)."""
    stable, threshold, max_permits, slope, cool_down = warm_model(p)
    if state is None:
        next_free, stored = now, max_permits
    else:
        next_free, stored, old_max = state
        if old_max != max_permits:
            if now > next_free:
                stored = min(old_max, stored + (now - next_free) / (p.warmup_us / old_max))
                next_free = now
            stored = stored * max_permits / old_max
    if now > next_free:  # resync: idle time turns into stored permits
        stored = min(max_permits, stored + (now - next_free) / cool_down)
        next_free = now
    if cost == 0 or next_free > now:
        ok = 1 if next_free <= now else 0
        idle = next_free - now + math.ceil((max_permits - stored) * cool_down)
        return None, (ok, ok, next_free - now, idle, 0)
    spend = min(float(cost), stored)
    wait = _wait_for_stored(stored, spend, stable, threshold, slope) + math.floor((cost - spend) * stable)
    next_free += wait
    stored -= spend
    idle = next_free - now + math.ceil((max_permits - stored) * cool_down)
    return (next_free, stored, max_permits), (1, 1 if wait == 0 else 0, 0, idle, 0)


# -------------------------------------------------------------------------------------------- nginx
def nginx(state: Any, now: int, cost: int, p: Params) -> tuple[Any, Raw]:
    """nginx ``limit_req`` (``ngx_http_limit_req_module.c``), exactly: milliseconds, ``excess`` in thousandths
    of a request, decay ``rate * ms / 1000`` rounded down, a new key starts at excess 0 (so ``burst + 1`` pass
    at once), a rejected request changes nothing, and an allowed one is delayed by
    ``(excess - delay) * 1000 / rate`` ms when ``excess`` is over the delay threshold (``nodelay``: never).
    State: ``(excess, last_ms)``. Cost is 0 (peek) or 1, like nginx."""
    rate, burst = p.nginx_rate, p.limit * 1000
    now_ms = now // 1000
    if state is None:
        e = 0
    else:
        excess, last = state
        ms = now_ms - last
        if ms < -60000:
            ms = 1
        elif ms < 0:
            ms = 0
        e = excess - rate * ms // 1000 + 1000
        e = max(e, 0)
    if e > burst:  # NGX_BUSY: nothing is stored
        excess, last = state
        retry = (last + ceil_div((excess + 1000 - burst) * 1000, rate)) * 1000 - now
        return None, (0, 0, max(1, retry), _nginx_idle(state, now, rate), 0)
    if cost == 0:
        return None, (1, (burst - e) // 1000 + 1, 0, _nginx_idle(state, now, rate), 0)
    threshold = p.delay * 1000
    delay_ms = (e - threshold) * 1000 // rate if e > threshold else 0
    new = (e, now_ms)
    return new, (1, (burst - e) // 1000, 0, _nginx_idle(new, now, rate), delay_ms * 1000)


def _nginx_idle(state: Any, now: int, rate: int) -> int:
    """µs until the node is equivalent to no node (the next request would find excess 0 either way)."""
    if state is None:
        return 0
    excess, last = state
    idle = (last + ceil_div((excess + 1000) * 1000, rate)) * 1000 - now
    return idle if idle > 0 else 0


# ------------------------------------------------------------------------------------------ windows
def fixed_window(state: Any, now: int, cost: int, p: Params) -> tuple[Any, Raw]:
    """Counter per window ``floor(now / period)``; state ``(window, count)``."""
    window = now // p.period_us
    count = state[1] if state is not None and state[0] == window else 0
    reset = (window + 1) * p.period_us - now
    if count + cost <= p.limit:
        if cost == 0:
            return None, (1 if count < p.limit else 0, p.limit - count, 0 if count < p.limit else reset, reset, 0)
        return (window, count + cost), (1, p.limit - count - cost, 0, reset, 0)
    return None, (0, p.limit - count, reset, reset, 0)


def sliding_window_counter(state: Any, now: int, cost: int, p: Params) -> tuple[Any, Raw]:
    """Cloudflare's approximation: previous window's count weighted by its overlap, plus the current one.
    Exact in integers: ``estimate * period = prev * (period - elapsed) + cur * period``."""
    period = p.period_us
    window = now // period
    cur, prev = 0, 0
    if state is not None:
        if state[0] == window:
            cur, prev = state[1], state[2]
        elif state[0] == window - 1:
            prev = state[1]
    elapsed = now - window * period
    est_scaled = prev * (period - elapsed) + cur * period  # estimate * period
    limit_scaled = p.limit * period
    reset = (window + (2 if cur > 0 or cost > 0 else 1)) * period - now
    if cost > 0 and est_scaled + cost * period <= limit_scaled:
        return (window, cur + cost, prev), (1, (limit_scaled - est_scaled - cost * period) // period, 0, reset, 0)
    reset = (window + (2 if cur > 0 else 1)) * period - now
    remaining = (limit_scaled - est_scaled) // period if limit_scaled > est_scaled else 0
    if cost == 0:
        return None, (1 if remaining >= 1 else 0, remaining, 0, reset, 0)
    room = p.limit - cur - cost
    if prev > 0 and room >= 0:  # wait until the previous window's weight has decayed enough
        retry = ceil_div(period * (prev - room), prev) - elapsed
    else:  # wait for the next window, where this window's count becomes the weighted one
        nxt = p.limit - cost
        retry = (period - elapsed) + (ceil_div(period * (cur - nxt), cur) if cur > 0 and nxt < cur else 0)
    return None, (0, remaining, max(1, retry), reset, 0)


class LogState:
    """A sliding log as a counted list: entry ``i`` is one allowed decision (its stamp and the running total
    of units up to it), so ``cost`` units are one entry and the live count is a difference of two totals.
    ``head`` is the first entry not yet trimmed; expired entries are trimmed at most LOG_TRIM per decision."""

    __slots__ = ("before", "cums", "head", "stamps")

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.cums: list[int] = []
        self.head = 0
        self.before = 0  # the running total before entry 0 (entries compacted away)


def sliding_window_log(state: Any, now: int, cost: int, p: Params) -> tuple[Any, Raw]:
    """Exact: never more than ``limit`` units in any window ``(t - period, t]``. Work per decision is
    O(log n) plus at most LOG_TRIM trimmed entries (the Redis twin: a sorted set, the same bounds)."""
    log: LogState = state if state is not None else LogState()
    stamps, cums = log.stamps, log.cums
    horizon = now - p.period_us
    first = bisect_right(stamps, horizon, log.head)  # first live entry
    log.head = min(first, log.head + LOG_TRIM)
    if log.head > 4096 and log.head * 2 > len(stamps):
        log.before = cums[log.head - 1]
        del stamps[: log.head], cums[: log.head]
        first -= log.head
        log.head = 0
    total = cums[-1] if cums else log.before
    base = cums[first - 1] if first > 0 else log.before
    n = total - base
    reset = stamps[-1] + p.period_us - now if first < len(stamps) else 0
    if n + cost <= p.limit:
        if cost == 0:
            return log, (1 if n < p.limit else 0, p.limit - n, 0, reset, 0)
        stamps.append(now)
        cums.append(total + cost)
        return log, (1, p.limit - n - cost, 0, p.period_us, 0)
    needed = n + cost - p.limit  # units that must leave the window first
    i = bisect_left(cums, base + needed, first)
    return log, (0, p.limit - n, stamps[i] + p.period_us - now, reset, 0)

