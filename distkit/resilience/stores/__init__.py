"""Where a shared breaker's window lives: ``MemoryBreakerStore`` (one process) or ``RedisBreakerStore``."""

from distkit._lazy import lazy_getattr
from distkit.resilience.stores.base import AsyncBreakerStore, BreakerStore, View
from distkit.resilience.stores.memory import MemoryBreakerStore

__all__ = [
    "AsyncBreakerStore",
    "AsyncRedisBreakerStore",
    "BreakerStore",
    "MemoryBreakerStore",
    "RedisBreakerStore",
    "View",
]

__getattr__ = lazy_getattr(
    __name__,
    {
        "RedisBreakerStore": "distkit.resilience.stores.redis",
        "AsyncRedisBreakerStore": "distkit.resilience.stores.redis",
    },
)
