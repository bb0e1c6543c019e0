"""Unique, roughly time-ordered 63-bit ids without a central counter.

>>> from distkit.idgen import Snowflake, Butterfly, RollbackPolicy
>>> gen = Snowflake(worker_id=7, datacenter_id=1)
>>> i = gen.next_id()
>>> gen.decode(i).worker_id
7

See docs/idgen.md for choosing Snowflake vs Butterfly, layouts, rollback policies and leased worker ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distkit._lazy import lazy_getattr
from distkit.idgen.generator import Butterfly, IdGenerator, RollbackPolicy, Snowflake
from distkit.idgen.layout import BUTTERFLY, DEFAULT_EPOCH_MS, SNOWFLAKE, TWITTER_EPOCH_MS, IdParts, Layout, decode
from distkit.idgen.lease.base import WorkerLease

if TYPE_CHECKING:
    from distkit.idgen.lease.redis import RedisWorkerLease
    from distkit.idgen.lease.sql import SqlWorkerLease

__all__ = [
    "BUTTERFLY",
    "DEFAULT_EPOCH_MS",
    "SNOWFLAKE",
    "TWITTER_EPOCH_MS",
    "Butterfly",
    "IdGenerator",
    "IdParts",
    "Layout",
    "RedisWorkerLease",
    "RollbackPolicy",
    "Snowflake",
    "SqlWorkerLease",
    "WorkerLease",
    "decode",
]

_LAZY = {"RedisWorkerLease": "distkit.idgen.lease.redis", "SqlWorkerLease": "distkit.idgen.lease.sql"}
__getattr__ = lazy_getattr(__name__, _LAZY)
