"""Idempotent consumers: run a handler once per business key, whatever the delivery count.

>>> from distkit.idempotency import idempotent, RedisIdempotencyStore   # doctest: +SKIP
>>> @idempotent(RedisIdempotencyStore(redis_client), key=lambda m: m.headers["event-id"])  # doctest: +SKIP
... def handle(msg): ...

See docs/idempotency.md: which guard when (SET NX vs unique index vs inbox), and the failure cases.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from distkit._lazy import lazy_getattr
from distkit.idempotency.cache import LocalCache
from distkit.idempotency.codec import ResultCodec, TaggedJsonCodec
from distkit.idempotency.decorator import idempotent
from distkit.idempotency.record import BeginResult, IdempotencyRecord, Outcome
from distkit.idempotency.stores.base import IdempotencyStore

if TYPE_CHECKING:
    from distkit.idempotency.inbox import Inbox
    from distkit.idempotency.stores.redis import RedisIdempotencyStore
    from distkit.idempotency.stores.sql import SqlIdempotencyStore

__all__ = [
    "BeginResult",
    "IdempotencyRecord",
    "IdempotencyStore",
    "Inbox",
    "LocalCache",
    "Outcome",
    "RedisIdempotencyStore",
    "ResultCodec",
    "SqlIdempotencyStore",
    "TaggedJsonCodec",
    "idempotent",
]

_LAZY = {
    "Inbox": "distkit.idempotency.inbox",
    "RedisIdempotencyStore": "distkit.idempotency.stores.redis",
    "SqlIdempotencyStore": "distkit.idempotency.stores.sql",
}
_lazy = lazy_getattr(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    if name == "JsonCodec":  # the old name, easy to confuse with distkit.messaging.JsonCodec
        warnings.warn(
            "distkit.idempotency.JsonCodec is deprecated: use distkit.idempotency.TaggedJsonCodec (the same codec; "
            "the old name was easy to confuse with distkit.messaging.JsonCodec, which decodes UUIDs as strings)",
            DeprecationWarning,
            stacklevel=2,
        )
        return TaggedJsonCodec
    return _lazy(name)
