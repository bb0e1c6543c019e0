"""Idempotent consumers: run a handler once per business key, whatever the delivery count.

>>> from distkit.idempotency import idempotent, RedisIdempotencyStore   # doctest: +SKIP
>>> @idempotent(RedisIdempotencyStore(redis_client), key=lambda m: m.headers["event-id"])  # doctest: +SKIP
... def handle(msg): ...

See docs/idempotency.md: which guard when (SET NX vs unique index vs inbox), and the failure cases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distkit._lazy import lazy_getattr
from distkit.idempotency.codec import JsonCodec, ResultCodec
from distkit.idempotency.decorator import idempotent
from distkit.idempotency.record import BeginResult, Outcome
from distkit.idempotency.stores.base import IdempotencyStore

if TYPE_CHECKING:
    from distkit.idempotency.inbox import Inbox
    from distkit.idempotency.stores.redis import RedisIdempotencyStore
    from distkit.idempotency.stores.sql import SqlIdempotencyStore

__all__ = [
    "BeginResult",
    "IdempotencyStore",
    "Inbox",
    "JsonCodec",
    "Outcome",
    "RedisIdempotencyStore",
    "ResultCodec",
    "SqlIdempotencyStore",
    "idempotent",
]

_LAZY = {
    "Inbox": "distkit.idempotency.inbox",
    "RedisIdempotencyStore": "distkit.idempotency.stores.redis",
    "SqlIdempotencyStore": "distkit.idempotency.stores.sql",
}
__getattr__ = lazy_getattr(__name__, _LAZY)
