"""The store contract: three atomic transitions on one record."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from distkit.idempotency.record import BeginResult


@runtime_checkable
class IdempotencyStore(Protocol):
    """``begin`` claims or reports a key; ``complete`` stores the result only for the current owner;
    ``release`` drops the owner's claim after a failure. Each is atomic. Stores with an asyncio client set
    ``is_async`` and offer ``abegin`` / ``acomplete`` / ``arelease``.

    Optional members ``@idempotent`` uses when present: ``check_key(key)`` raises
    :class:`~distkit.errors.IdempotencyKeyError` for a key the store cannot hold (checked before the handler
    runs); ``requires_utf8 = True`` when stored results must be valid UTF-8. An unreachable backend should raise
    :class:`~distkit.errors.IdempotencyStoreError` (any :class:`~distkit.errors.BackendUnavailableError`): only
    those follow ``on_store_error``; any other exception is raised as itself and the handler does not run."""

    is_async: bool

    def begin(self, key: str, token: str, payload_hash: str, in_progress_ttl_ms: int, ttl_ms: int) -> BeginResult: ...

    def complete(self, key: str, token: str, result: bytes, ttl_ms: int) -> bool: ...

    def release(self, key: str, token: str) -> bool: ...
