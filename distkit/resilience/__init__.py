"""Resilience: circuit breakers (time-based sliding window, failure- and slow-call-rate rules, a HALF_OPEN probe
budget, optionally shared across processes through Redis), bulkheads and degrade fallbacks.

>>> from distkit.resilience import CircuitBreaker, degrade
>>> breaker = CircuitBreaker("doc-api", minimum_calls=3, open_s=5)
>>> @degrade(fallback=lambda: "cached")
... @breaker
... def quote():
...     raise ConnectionError("down")
>>> for _ in range(3):  # three failures out of three calls: the failure rate trips it
...     try:
...         quote()
...     except ConnectionError:
...         pass
>>> breaker.state, quote()
(<State.OPEN: 'OPEN'>, 'cached')

See docs/resilience.md. ``import distkit.resilience`` does not import redis (``RedisBreakerStore`` does).
"""

from typing import TYPE_CHECKING

from distkit._lazy import lazy_getattr
from distkit.errors import BreakerOpenError, BulkheadFullError, InvalidBreakerConfigError
from distkit.resilience.breaker import BreakerConfig, State
from distkit.resilience.bulkhead import Bulkhead, BulkheadMetrics
from distkit.resilience.circuit import BreakerMetrics, CircuitBreaker, monotonic_clock
from distkit.resilience.degrade import degrade
from distkit.resilience.metrics import Event
from distkit.resilience.stores.base import AsyncBreakerStore, BreakerStore
from distkit.resilience.stores.memory import MemoryBreakerStore

__all__ = [
    "AsyncBreakerStore",
    "AsyncRedisBreakerStore",
    "BreakerConfig",
    "BreakerMetrics",
    "BreakerOpenError",
    "BreakerStore",
    "Bulkhead",
    "BulkheadFullError",
    "BulkheadMetrics",
    "CircuitBreaker",
    "Event",
    "InvalidBreakerConfigError",
    "MemoryBreakerStore",
    "RedisBreakerStore",
    "State",
    "degrade",
    "monotonic_clock",
]

if TYPE_CHECKING:
    from distkit.resilience.stores.redis import AsyncRedisBreakerStore, RedisBreakerStore

__getattr__ = lazy_getattr(
    __name__,
    {
        "RedisBreakerStore": "distkit.resilience.stores.redis",
        "AsyncRedisBreakerStore": "distkit.resilience.stores.redis",
    },
)
