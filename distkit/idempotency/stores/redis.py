"""Redis idempotency store: one hash per key, every transition one Lua script (time from Redis ``TIME``)."""

from __future__ import annotations

import inspect
from typing import Any

from distkit._redis import Script, key
from distkit._redis.direct import AsyncRunner, Runner
from distkit.idempotency.record import BeginResult, Outcome

_BEGIN = Script("idempotency", "begin")
_COMPLETE = Script("idempotency", "complete")
_RELEASE = Script("idempotency", "release")


def parse_begin(reply: Any) -> BeginResult:
    """The Lua reply of ``begin.lua`` as a :class:`BeginResult`."""
    kind = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    outcome = Outcome(kind)
    if outcome is Outcome.COMPLETED:
        stored_hash = reply[1].decode() if reply[1] else ""
        return BeginResult(outcome, payload_hash=stored_hash, result=bytes(reply[2]) if reply[2] else b"")
    if outcome is Outcome.IN_PROGRESS:
        return BeginResult(outcome, payload_hash=reply[1].decode() if reply[1] else "", age_ms=int(reply[2]))
    return BeginResult(outcome)


class RedisIdempotencyStore:
    """Records at ``{prefix:key}`` (cluster-safe). Pass a sync client for sync handlers and an asyncio client
    (``redis.asyncio``) for ``async def`` handlers.

    Round trips: a first run costs two (begin, complete), a duplicate one (begin returns the result).

    ``direct=True`` (default) runs the scripts over private connections of a plain redis-py client, skipping
    redis-py's per-command overhead (see :mod:`distkit._redis.direct`); a reused connection found dead is
    replaced and the script resent once, which every script here tolerates (resending begin, complete or
    release by the same owner answers the same). ``direct=False`` keeps the client's own command path.
    """

    def __init__(self, redis_client: Any, prefix: str = "idem", *, direct: bool = True) -> None:
        self.redis = redis_client
        self.prefix = prefix
        self.is_async = inspect.iscoroutinefunction(getattr(redis_client, "execute_command", None))
        self._run: Any = (AsyncRunner if self.is_async else Runner)(redis_client, direct=direct)

    def record_key(self, idempotency_key: str) -> str:
        return key(self.prefix, idempotency_key)

    def begin(self, key: str, token: str, payload_hash: str, in_progress_ttl_ms: int, ttl_ms: int) -> BeginResult:
        args: list[str | int] = [token, payload_hash, in_progress_ttl_ms, max(ttl_ms, in_progress_ttl_ms)]
        return parse_begin(self._run(_BEGIN, [self.record_key(key)], args))

    def complete(self, key: str, token: str, result: bytes, ttl_ms: int) -> bool:
        return bool(self._run(_COMPLETE, [self.record_key(key)], [token, result, ttl_ms]))

    def release(self, key: str, token: str) -> bool:
        return bool(self._run(_RELEASE, [self.record_key(key)], [token]))

    async def abegin(
        self, key: str, token: str, payload_hash: str, in_progress_ttl_ms: int, ttl_ms: int
    ) -> BeginResult:
        args: list[str | int] = [token, payload_hash, in_progress_ttl_ms, max(ttl_ms, in_progress_ttl_ms)]
        return parse_begin(await self._run(_BEGIN, [self.record_key(key)], args))

    async def acomplete(self, key: str, token: str, result: bytes, ttl_ms: int) -> bool:
        return bool(await self._run(_COMPLETE, [self.record_key(key)], [token, result, ttl_ms]))

    async def arelease(self, key: str, token: str) -> bool:
        return bool(await self._run(_RELEASE, [self.record_key(key)], [token]))
