"""The circuit breaker's state machine and time-bucketed sliding window: pure logic, no I/O, no locks, no clock.

Every method takes ``now`` (ms); :class:`~distkit.resilience.circuit.CircuitBreaker` is the thin shell that
adds the clock, a lock, the decorator, events and a shared store. Semantics (resilience4j's, with a time-based
window like Sentinel's LeapArray):

* the window is ``buckets`` buckets of ``window_ms / buckets``; a call is counted in the bucket of the time it
  *ended*; buckets older than the window drop out whole (bucket ``b`` is in the window at ``now`` when
  ``b > now // bucket_ms - buckets``);
* CLOSED → OPEN when the window holds at least ``minimum_calls`` calls and ``failed / calls >= failure_rate``
  or ``slow / calls >= slow_call_rate`` (a call is slow when it took ``>= slow_call_ms``; slow failures count
  as both). The window is cleared on every transition;
* OPEN rejects for ``open_ms``, then the first admission attempt moves it to HALF_OPEN;
* HALF_OPEN admits exactly ``half_open_calls`` probes; when all of them have reported, the same two rates
  over the probes decide: either at or over its threshold → OPEN again, else → CLOSED. A probe that ends with
  an ignored exception gives its permit back. If the probes have not all reported after ``half_open_max_ms``
  (a hung call, a killed process holding a permit) the breaker re-opens;
* ``force_open`` holds it OPEN until ``reset``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from distkit.errors import InvalidBreakerConfigError


class State(str, Enum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"

    def __str__(self) -> str:
        return self.value


CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN
STATE_CODE = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}
CODE_STATE = {0: CLOSED, 1: OPEN, 2: HALF_OPEN}

#: the permit of a call admitted in CLOSED; probes get ``2 * epoch + 1`` (odd), rejections ``None``
CALL = 0
FOREVER = 1 << 62


@dataclass(frozen=True)
class BreakerConfig:
    """Validated settings; times in ms. See :class:`~distkit.resilience.CircuitBreaker` for the meaning."""

    failure_rate: float = 0.5
    slow_call_rate: float = 1.0
    slow_call_ms: int = 60_000
    window_ms: int = 10_000
    buckets: int = 10
    minimum_calls: int = 20
    open_ms: int = 5_000
    half_open_calls: int = 3
    half_open_max_ms: int = 30_000
    bucket_ms: int = field(init=False)

    def __post_init__(self) -> None:
        bad = InvalidBreakerConfigError
        if not 0 < self.failure_rate <= 1:
            raise bad(f"failure_rate must be in (0, 1], got {self.failure_rate!r}")
        if not 0 < self.slow_call_rate <= 1:
            raise bad(f"slow_call_rate must be in (0, 1], got {self.slow_call_rate!r}")
        if self.slow_call_ms < 1:
            raise bad(f"slow_call_s must be at least 0.001, got {self.slow_call_ms / 1000!r}")
        if self.buckets < 1 or self.window_ms < self.buckets or self.window_ms % self.buckets:
            raise bad(
                f"window_s={self.window_ms / 1000} must split into buckets={self.buckets} whole milliseconds; "
                "pick a window that is a multiple of buckets ms (e.g. window_s=10, buckets=10)"
            )
        if self.minimum_calls < 1:
            raise bad(f"minimum_calls must be >= 1, got {self.minimum_calls}")
        if self.open_ms < 1:
            raise bad(f"open_s must be at least 0.001, got {self.open_ms / 1000}")
        if self.half_open_calls < 1:
            raise bad(f"half_open_calls must be >= 1, got {self.half_open_calls}")
        if self.half_open_max_ms < 1:
            raise bad(f"half_open_max_s must be at least 0.001, got {self.half_open_max_ms / 1000}")
        object.__setattr__(self, "bucket_ms", self.window_ms // self.buckets)

    @staticmethod
    def ms(seconds: float, what: str) -> int:
        if not isinstance(seconds, (int, float)) or math.isnan(seconds) or seconds <= 0:
            raise InvalidBreakerConfigError(f"{what} must be a positive number of seconds, got {seconds!r}")
        return max(1, round(seconds * 1000))

    def tripped(self, calls: int, failed: int, slow: int) -> bool:
        """The rule, shared by the window and the probes (and mirrored in lua/_breaker.lua)."""
        return calls > 0 and (failed / calls >= self.failure_rate or slow / calls >= self.slow_call_rate)


Transition = tuple[State, State, str]  # (from, to, reason)
RULE_TRIPS = ("failure rate", "slow-call rate")  # how the reasons of CLOSED -> OPEN by a rule begin


class Machine:
    """One breaker's state and window. Not thread-safe: the shell holds a lock around every call.

    In shared mode the shell feeds the other processes' share of the window in ``ext_*`` (see
    :meth:`apply_view`); rules then judge local + ext. With ``ext_* == 0`` it is a plain local breaker."""

    __slots__ = (
        "bucket_end",
        "bucket_end_ns",
        "bucket_ms",
        "buckets",
        "calls",
        "cfg",
        "cur",
        "done",
        "done_calls",
        "done_failed",
        "done_slow",
        "epoch",
        "ext_calls",
        "ext_failed",
        "ext_slow",
        "failed",
        "forced",
        "issued",
        "min_calls",
        "open_until",
        "p_failed",
        "p_slow",
        "rejected",
        "ring",
        "ring_calls",
        "ring_failed",
        "ring_slow",
        "since",
        "slow",
        "slow_ms",
        "state",
        "trip_at",
    )

    def __init__(self, cfg: BreakerConfig, now: int) -> None:
        self.cfg = cfg
        self.bucket_ms = cfg.bucket_ms
        self.buckets = cfg.buckets
        self.slow_ms = cfg.slow_call_ms
        self.min_calls = cfg.minimum_calls
        self.state = CLOSED
        self.epoch = 0
        self.since = now
        self.open_until = 0
        self.forced = False
        self.rejected = 0
        # per-call counters the shell reads for flushing: finished buckets + the current one
        self.done_calls = self.done_failed = self.done_slow = 0
        self.ext_calls = self.ext_failed = self.ext_slow = 0
        self.issued = self.done = self.p_failed = self.p_slow = 0
        self.calls = self.failed = self.slow = 0
        self.ring_calls = self.ring_failed = self.ring_slow = 0
        self._clear(now)

    # ------------------------------------------------------------------ window

    def _clear(self, now: int) -> None:
        self.done_calls += self.calls - self.ring_calls
        self.done_failed += self.failed - self.ring_failed
        self.done_slow += self.slow - self.ring_slow
        self.ring = [(0, 0, 0)] * self.buckets  # finished buckets (calls, failed, slow) by index % buckets
        self.ring_calls = self.ring_failed = self.ring_slow = 0  # their sums
        self.cur = now // self.bucket_ms
        self.bucket_end = (self.cur + 1) * self.bucket_ms
        self.bucket_end_ns = self.bucket_end * 1_000_000
        # window totals, the current bucket included: the current bucket's counts are totals - ring sums
        self.calls = self.failed = self.slow = 0
        self.ext_calls = self.ext_failed = self.ext_slow = 0
        self.trip_at = self.min_calls  # a success that makes calls == trip_at may trip (calls + ext reach min)

    def roll(self, now: int) -> None:
        """Move the current bucket to ``now``'s, dropping buckets that left the window (clock steps back: no-op)."""
        b = now // self.bucket_ms
        if b <= self.cur:
            return
        n = self.buckets
        ring = self.ring
        cc, cf, cs = self.calls - self.ring_calls, self.failed - self.ring_failed, self.slow - self.ring_slow
        self.done_calls += cc
        self.done_failed += cf
        self.done_slow += cs
        if b - self.cur >= n:
            self.ring = [(0, 0, 0)] * n
            self.calls = self.failed = self.slow = 0
            self.ring_calls = self.ring_failed = self.ring_slow = 0
        else:
            ring[self.cur % n] = (cc, cf, cs)
            self.ring_calls += cc
            self.ring_failed += cf
            self.ring_slow += cs
            for i in range(self.cur + 1, b + 1):  # buckets i - n (now out of the window) share slot i % n
                c, f, s = ring[i % n]
                if c:
                    self.calls -= c
                    self.failed -= f
                    self.slow -= s
                    self.ring_calls -= c
                    self.ring_failed -= f
                    self.ring_slow -= s
                    ring[i % n] = (0, 0, 0)
        self.cur = b
        self.bucket_end = (b + 1) * self.bucket_ms
        self.bucket_end_ns = self.bucket_end * 1_000_000

    def totals(self) -> tuple[int, int, int]:
        """(calls, failed, slow) the rules judge: this process's window plus the other processes' share."""
        return self.calls + self.ext_calls, self.failed + self.ext_failed, self.slow + self.ext_slow

    def flushed(self) -> tuple[int, int, int]:
        """Cumulative (calls, failed, slow) counted while CLOSED: the shell flushes their growth to a store."""
        return (
            self.done_calls + self.calls - self.ring_calls,
            self.done_failed + self.failed - self.ring_failed,
            self.done_slow + self.slow - self.ring_slow,
        )

    # ------------------------------------------------------------------ transitions

    def _to(self, state: State, now: int, reason: str) -> Transition:
        old = self.state
        self.state = state
        self.epoch += 1
        self.since = now
        self.issued = self.done = self.p_failed = self.p_slow = 0
        if state is OPEN:
            self.open_until = FOREVER if self.forced else now + self.cfg.open_ms
        self._clear(now)
        return (old, state, reason)

    def evaluate(self, now: int) -> Transition | None:
        """CLOSED → OPEN if the window breaks a rule."""
        if self.state is not CLOSED:
            return None
        calls, failed, slow = self.totals()
        if calls < self.min_calls:
            return None
        cfg = self.cfg
        if failed / calls >= cfg.failure_rate:
            return self._to(OPEN, now, f"failure rate {failed}/{calls} >= {cfg.failure_rate}")
        if slow / calls >= cfg.slow_call_rate:
            return self.to_open_slow(now, slow, calls)
        return None

    def to_open_slow(self, now: int, slow: int, calls: int) -> Transition:
        return self._to(OPEN, now, f"slow-call rate {slow}/{calls} >= {self.cfg.slow_call_rate}")

    def tick(self, now: int) -> Transition | None:
        """Time-driven transitions: OPEN → HALF_OPEN after ``open_ms``; HALF_OPEN → OPEN after ``half_open_max_ms``."""
        if self.state is OPEN:
            if now >= self.open_until:
                return self._to(HALF_OPEN, now, f"open for {self.cfg.open_ms} ms")
        elif self.state is HALF_OPEN and now - self.since >= self.cfg.half_open_max_ms:
            return self._to(OPEN, now, f"probes not finished within {self.cfg.half_open_max_ms} ms")
        return None

    def admit(self, now: int) -> tuple[int | None, Transition | None]:
        """(permit, transition): ``CALL`` in CLOSED, an odd probe permit in HALF_OPEN, ``None`` = rejected."""
        if self.state is CLOSED:
            return CALL, None
        t = self.tick(now)
        if self.state is HALF_OPEN and self.issued < self.cfg.half_open_calls:
            self.issued += 1
            return 2 * self.epoch + 1, t
        self.rejected += 1
        return None, t

    def record(self, now: int, permit: int, failed: bool, slow: bool) -> Transition | None:
        """The outcome of an admitted call (ignored exceptions go to :meth:`release` instead)."""
        if permit == CALL:
            if self.state is not CLOSED:
                return None  # admitted before a trip: the window it belonged to is gone
            if now >= self.bucket_end:
                self.roll(now)
            self.calls += 1
            if failed:
                self.failed += 1
            if slow:
                self.slow += 1
            if failed or slow or self.calls == self.trip_at:
                return self.evaluate(now)
            return None
        if self.state is not HALF_OPEN or permit != 2 * self.epoch + 1:
            return None  # a probe of an earlier half-open round
        self.done += 1
        self.p_failed += failed
        self.p_slow += slow
        if self.done < self.cfg.half_open_calls:
            return None
        return self.judge_probes(now, self.done, self.p_failed, self.p_slow)

    def judge_probes(self, now: int, done: int, failed: int, slow: int) -> Transition:
        if self.cfg.tripped(done, failed, slow):
            return self._to(OPEN, now, f"probes: {failed} failed, {slow} slow of {done}")
        return self._to(CLOSED, now, f"probes: {failed} failed, {slow} slow of {done}")

    def release(self, permit: int) -> None:
        """An admitted call ended with an ignored exception: it does not count; a probe gives its permit back."""
        if permit != CALL and self.state is HALF_OPEN and permit == 2 * self.epoch + 1 and self.issued > self.done:
            self.issued -= 1

    def force_open(self, now: int) -> Transition | None:
        self.forced = True
        if self.state is OPEN:
            self.open_until = FOREVER
            return None
        return self._to(OPEN, now, "forced open")

    def reset(self, now: int) -> Transition | None:
        self.forced = False
        if self.state is CLOSED:
            self._clear(now)
            return None
        return self._to(CLOSED, now, "reset")

    def retry_after_ms(self, now: int) -> int:
        if self.state is OPEN:
            return max(0, self.open_until - now) if self.open_until < FOREVER else self.cfg.open_ms
        return 0

    # ------------------------------------------------------------------ shared mode

    def adopt(self, now: int, state: State, remaining_open_ms: int, forced: bool) -> Transition | None:
        """Take the store's state (another process tripped, probed or reset it)."""
        self.forced = forced
        if state is self.state:
            if state is OPEN:
                self.open_until = FOREVER if forced else now + remaining_open_ms
            return None
        t = self._to(state, now, "shared state")
        if state is OPEN and not forced:
            self.open_until = now + remaining_open_ms
        return t

    def set_ext(self, calls: int, failed: int, slow: int) -> None:
        """The other processes' share: the store's window totals minus this process's own window (>= 0)."""
        self.ext_calls = max(0, calls - self.calls)
        self.ext_failed = max(0, failed - self.failed)
        self.ext_slow = max(0, slow - self.slow)
        self.trip_at = self.min_calls - self.ext_calls
