"""``Rate`` and ``Decision``: what a limit is, and what a limiter answers."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

from distkit.errors import InvalidRateError

MAX_PERIOD_S = 10 * 366 * 86400  # ten years: longer periods are almost certainly a unit mistake
_TOKEN = re.compile(r"^[A-Za-z*][A-Za-z0-9:/!#$%&'*+\-.^_`|~]*$")  # an RFC 8941 sf-token


@dataclass(frozen=True)
class Rate:
    """``count`` requests per ``per_s`` seconds (whole microseconds, from 1 µs to ten years).

    >>> Rate(100, per_s=1.0).period_us
    1000000
    """

    count: int
    per_s: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or isinstance(self.count, bool) or not 1 <= self.count < 2**31:
            raise InvalidRateError(f"Rate.count must be an int from 1 to 2**31 - 1, got {self.count!r}")
        if (
            not isinstance(self.per_s, int | float)
            or isinstance(self.per_s, bool)
            or not math.isfinite(self.per_s)
            or self.per_s <= 0
        ):
            raise InvalidRateError(f"Rate.per_s must be a number of seconds > 0, got {self.per_s!r}")
        if round(self.per_s * 1_000_000) < 1:
            raise InvalidRateError(
                f"Rate.per_s={self.per_s!r} is shorter than 1 µs: express the rate over a longer period "
                f"(e.g. Rate({self.count * 1000}, per_s={self.per_s * 1000:g}))"
            )
        if self.per_s > MAX_PERIOD_S:
            raise InvalidRateError(f"Rate.per_s={self.per_s!r} is longer than ten years; use a shorter period")

    @property
    def period_us(self) -> int:
        return round(self.per_s * 1_000_000)

    @property
    def interval_us(self) -> float:
        """Time between two requests at a steady rate (the GCRA emission interval), for display only: the
        algorithms work in exact integer ticks of ``1/count`` µs."""
        return self.period_us / self.count

    def to_json(self) -> dict[str, float]:
        return {"count": self.count, "per_s": self.per_s}


def quota_policy(rate: Rate, at_once: int, kind: str) -> tuple[int, int]:
    """The IETF quota policy ``(q, w)`` a limiter honours: never more than ``q`` requests in any ``w`` seconds
    (``w`` a whole number of seconds, as the draft requires: the smallest whole multiple of the rate's period).

    * windows (fixed, sliding log, sliding counter): ``rate.count`` per period, so ``q = count * periods``;
    * GCRA buckets (token, leaky meter/queue): a full bucket of ``at_once`` plus one more every interval, so in
      any half-open window of ``w`` seconds ``q = at_once + count * periods - 1``;
    * nginx ``limit_req``: ``burst + 1`` at once, so ``q = burst + count * periods``;
    * Guava warm-up: one at a time, at most the stable rate, so ``q = count * periods``.
    """
    frac = Fraction(rate.period_us, 1_000_000)
    w, periods = frac.numerator, frac.denominator  # w seconds = `periods` whole periods
    n = rate.count * periods
    if kind == "gcra":
        return at_once + n - 1, w
    if kind == "nginx":
        return at_once + n, w
    return n, w


@dataclass(slots=True)
class Decision:
    """One limiter answer. ``limit`` is the number of requests allowed at once (burst/capacity for buckets,
    the window's count for windows); ``delay_s`` is how long an allowed request must wait before it runs
    (queue-mode leaky bucket, nginx mode without ``nodelay``). ``quota`` / ``quota_window_s`` are the IETF
    quota policy the limiter honours: never more than ``quota`` requests in any ``quota_window_s`` seconds."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float
    reset_after_s: float
    delay_s: float = 0.0
    window_s: float = 1.0
    fallback: str = ""  # set when a FailurePolicy answered instead of the backend
    quota: int = 0
    quota_window_s: int = 0

    def headers(self, policy: str = "default") -> dict[str, str]:
        """HTTP headers: the IETF draft's ``RateLimit-Policy`` / ``RateLimit`` (quota-policy semantics:
        ``q`` requests per ``w`` seconds, ``r`` remaining now, ``t`` seconds until more quota is available),
        the common ``X-RateLimit-*``, and ``Retry-After`` on denial (then ``t`` names the same moment)."""
        if not _TOKEN.match(policy):
            raise InvalidRateError(f"policy must be a structured-field token such as 'default', got {policy!r}")
        # on denial `t` names the same moment as Retry-After (the draft's SHOULD)
        t = max(0, math.ceil(self.reset_after_s)) if self.allowed else max(1, math.ceil(self.retry_after_s))
        q = self.quota or self.limit
        w = self.quota_window_s or max(1, math.ceil(self.window_s))
        out = {
            "RateLimit-Policy": f"{policy};q={q};w={w}",
            "RateLimit": f"{policy};r={self.remaining};t={t}",
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(t),
        }
        if not self.allowed:
            out["Retry-After"] = str(t)
        return out
