"""Shared Redis plumbing for every Redis-backed distkit module.

Modules never call ``register_script`` or build key strings by hand: they use :class:`Script` and
:func:`key`, which keep NOSCRIPT handling and Redis Cluster hash slots right everywhere.
"""

from distkit._redis.direct import AsyncRunner, Runner
from distkit._redis.keys import key, key_prefix
from distkit._redis.scripts import Script, is_cluster

__all__ = ["AsyncRunner", "Runner", "Script", "is_cluster", "key", "key_prefix"]
