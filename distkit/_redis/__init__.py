"""Shared Redis plumbing for every Redis-backed distkit module.

Modules never call ``register_script`` or build key strings by hand: they use :class:`Script` and
:func:`key`, which keep NOSCRIPT handling and Redis Cluster hash slots right everywhere, and they run every call
through :class:`Runner` / :class:`AsyncRunner` (the call policy: the client's own pool, a deadline, the client's
retry budget, a per-client outage breaker; see ``docs/redis-plumbing.md``).
"""

from distkit._redis.direct import AsyncRunner, Runner
from distkit._redis.keys import key, key_prefix
from distkit._redis.policy import (
    Breaker,
    CircuitOpenError,
    PoolExhaustedError,
    RedisUnavailableError,
    breaker_for,
)
from distkit._redis.scripts import Script, is_cluster
from distkit._redis.telemetry import CallEvent, on_call

__all__ = [
    "AsyncRunner",
    "Breaker",
    "CallEvent",
    "CircuitOpenError",
    "PoolExhaustedError",
    "RedisUnavailableError",
    "Runner",
    "Script",
    "breaker_for",
    "is_cluster",
    "key",
    "key_prefix",
    "on_call",
]
