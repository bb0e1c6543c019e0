"""``Rate`` and ``Decision``: what a limit is, and what a limiter answers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from distkit.errors import InvalidRateError


@dataclass(frozen=True)
class Rate:
    """``count`` requests per ``per_s`` seconds.

    >>> Rate(100, per_s=1.0).interval_us
    10000.0
    """

    count: int
    per_s: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1:
            raise InvalidRateError(f"Rate.count must be an int >= 1, got {self.count!r}")
        if not isinstance(self.per_s, int | float) or not math.isfinite(self.per_s) or self.per_s <= 0:
            raise InvalidRateError(f"Rate.per_s must be a number of seconds > 0, got {self.per_s!r}")

    @property
    def period_us(self) -> int:
        return round(self.per_s * 1_000_000)

    @property
    def interval_us(self) -> float:
        """Time between two requests at a steady rate (the GCRA emission interval)."""
        return self.period_us / self.count

    def to_json(self) -> dict[str, float]:
        return {"count": self.count, "per_s": self.per_s}


@dataclass(slots=True)
class Decision:
    """One limiter answer. ``limit`` is the number of requests allowed at once (burst/capacity for buckets,
    the window's count for windows); ``delay_s`` is how long an allowed request must wait before it runs
    (queue-mode leaky bucket only)."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float
    reset_after_s: float
    delay_s: float = 0.0
    window_s: float = 1.0
    fallback: str = ""  # set when a FailurePolicy answered instead of the backend

    def headers(self) -> dict[str, str]:
        """HTTP headers: the IETF draft's ``RateLimit-Policy`` / ``RateLimit``, the common ``X-RateLimit-*``,
        and ``Retry-After`` on denial."""
        reset = max(0, math.ceil(self.reset_after_s))
        out = {
            "RateLimit-Policy": f'"default";q={self.limit};w={max(1, math.ceil(self.window_s))}',
            "RateLimit": f'"default";r={self.remaining};t={reset}',
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(reset),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return out
