"""The store contract: three atomic transitions on one record."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from distkit.idempotency.record import BeginResult


@runtime_checkable
class IdempotencyStore(Protocol):
    """``begin`` claims or reports a key; ``complete`` stores the result only for the current owner;
    ``release`` drops the owner's claim after a failure. Each is atomic. Stores with an asyncio client set
    ``is_async`` and offer ``abegin`` / ``acomplete`` / ``arelease``."""

    is_async: bool

    def begin(self, key: str, token: str, payload_hash: str, in_progress_ttl_ms: int, ttl_ms: int) -> BeginResult: ...

    def complete(self, key: str, token: str, result: bytes, ttl_ms: int) -> bool: ...

    def release(self, key: str, token: str) -> bool: ...
