"""Rate limiting: token bucket (optionally Guava's warm-up), leaky bucket (meter, queue, nginx ``limit_req``), fixed
window, sliding window log and counter, each on a per-process memory backend or Redis (one Lua script, one round
trip, Redis time), all in exact integer arithmetic.

>>> from distkit.ratelimit import Rate, TokenBucket, MemoryBackend
>>> limiter = TokenBucket(Rate(100, per_s=1.0), burst=20, backend=MemoryBackend())
>>> d = limiter.acquire("user:42")
>>> d.allowed, d.limit, d.remaining
(True, 20, 19)

See docs/ratelimit.md for choosing an algorithm, HTTP headers and failure policies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distkit._lazy import lazy_getattr
from distkit.errors import RateLimitBackendError, RateLimitExceeded, RateLimitUsageError
from distkit.ratelimit.backends import MemoryBackend
from distkit.ratelimit.decorator import qps_limit
from distkit.ratelimit.limiter import (
    FixedWindow,
    LeakyBucket,
    Limiter,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)
from distkit.ratelimit.policy import FailurePolicy
from distkit.ratelimit.rate import Decision, Rate

if TYPE_CHECKING:
    from distkit.ratelimit.backends import AsyncRedisBackend, RedisBackend

__all__ = [
    "AsyncRedisBackend",
    "Decision",
    "FailurePolicy",
    "FixedWindow",
    "LeakyBucket",
    "Limiter",
    "MemoryBackend",
    "Rate",
    "RateLimitBackendError",
    "RateLimitExceeded",
    "RateLimitUsageError",
    "RedisBackend",
    "SlidingWindowCounter",
    "SlidingWindowLog",
    "TokenBucket",
    "qps_limit",
]

# the Redis backends load on first use: without the redis extra they say ``pip install 'distkit[redis]'``
_LAZY = {"AsyncRedisBackend": "distkit.ratelimit.backends", "RedisBackend": "distkit.ratelimit.backends"}
__getattr__ = lazy_getattr(__name__, _LAZY, requires=dict.fromkeys(_LAZY, "redis"))
