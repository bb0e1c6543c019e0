"""Redis idempotency store: one hash per key, every transition one Lua script (time from Redis ``TIME``)."""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Any

import redis as redis_mod

from distkit._redis import Script, key
from distkit._redis.direct import AsyncRunner, Runner
from distkit.errors import BackendUnavailableError, IdempotencyStoreError
from distkit.idempotency.record import BeginResult, Outcome

if TYPE_CHECKING:
    from distkit._types import RedisLike

_BEGIN = Script("idempotency", "begin")
_COMPLETE = Script("idempotency", "complete")
_RELEASE = Script("idempotency", "release")

#: What an unreachable Redis raises: the Runner's typed error, or (until every path maps it) redis-py's own.
OUTAGES: tuple[type[BaseException], ...] = (
    BackendUnavailableError,
    redis_mod.ConnectionError,
    redis_mod.TimeoutError,
    OSError,
)


#: Error replies that mean "this server cannot serve writes right now" (failover, a script stuck, a resharding
#: cluster), not "this request is wrong": they follow the outage policy too.
TRANSIENT_REPLIES: tuple[type[BaseException], ...] = (
    redis_mod.exceptions.ReadOnlyError,
    redis_mod.exceptions.ClusterDownError,
    redis_mod.exceptions.TryAgainError,
)


def _is_transient_reply(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_REPLIES) or (
        isinstance(exc, redis_mod.ResponseError) and str(exc).startswith(("BUSY", "LOADING", "MASTERDOWN"))
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _blob(value: Any) -> bytes:
    """A stored result as bytes, whether the client decodes responses (``str``) or not (``bytes``)."""
    if not value:
        return b""
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def parse_begin(reply: Any) -> BeginResult:
    """The Lua reply of ``begin.lua`` as a :class:`BeginResult` (``bytes`` or ``decode_responses=True`` ``str``)."""
    outcome = Outcome(_text(reply[0]))
    if outcome is Outcome.COMPLETED:
        ttl_left = int(reply[3]) if len(reply) > 3 else -1
        return BeginResult(outcome, payload_hash=_text(reply[1]), result=_blob(reply[2]), ttl_left_ms=ttl_left)
    if outcome is Outcome.IN_PROGRESS:
        return BeginResult(outcome, payload_hash=_text(reply[1]), age_ms=int(reply[2]))
    return BeginResult(outcome)


def _decodes_responses(client: Any) -> bool:
    get_encoder = getattr(client, "get_encoder", None)
    try:
        return bool(get_encoder().decode_responses) if get_encoder is not None else False
    except Exception:  # an unusual client: assume raw bytes
        return False


class RedisIdempotencyStore:
    """Records at ``{prefix:key}`` (cluster-safe). Pass a sync client for sync handlers and an asyncio client
    (``redis.asyncio``) for ``async def`` handlers. ``decode_responses=True`` clients work too (results are
    then read back as text, so a custom codec must produce UTF-8; the default codec writes ASCII).

    Round trips: a first run costs two (begin, complete), a duplicate one (begin returns the result).

    Every call is bounded by ``timeout_s`` (the Runner's deadline, whatever the client's ``retry=`` setting);
    an unreachable Redis raises :class:`~distkit.errors.IdempotencyStoreError`, which ``@idempotent`` turns
    into its ``on_store_error`` policy.

    ``direct=True`` (default) runs the scripts over private connections of a plain redis-py client, skipping
    redis-py's per-command overhead (see :mod:`distkit._redis.direct`); a reused connection found dead is
    replaced and the script resent once, which every script here tolerates (resending begin, complete or
    release by the same owner answers the same). ``direct=False`` keeps the client's own command path.
    """

    max_key_length: int | None = None

    def __init__(
        self, redis_client: RedisLike, prefix: str = "idem", *, direct: bool = True, timeout_s: float = 5.0
    ) -> None:
        self.redis = redis_client
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.is_async = inspect.iscoroutinefunction(getattr(redis_client, "execute_command", None))
        #: the client hands results back as ``str``: a stored result must be valid UTF-8
        self.requires_utf8 = _decodes_responses(redis_client)
        self._run: Any = (AsyncRunner if self.is_async else Runner)(redis_client, direct=direct, timeout_s=timeout_s)

    def record_key(self, idempotency_key: str) -> str:
        return key(self.prefix, idempotency_key)

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout_s

    def _call(self, what: str, script: Script, k: str, args: list[Any]) -> Any:
        try:
            return self._run(script, [self.record_key(k)], args, deadline=self._deadline())
        except IdempotencyStoreError:
            raise
        except OUTAGES as exc:
            raise IdempotencyStoreError(f"Redis idempotency store unreachable during {what}: {exc}") from exc
        except redis_mod.ResponseError as exc:
            if _is_transient_reply(exc):
                raise IdempotencyStoreError(f"Redis cannot serve the idempotency {what} now: {exc}") from exc
            raise

    async def _acall(self, what: str, script: Script, k: str, args: list[Any]) -> Any:
        try:
            return await self._run(script, [self.record_key(k)], args, deadline=self._deadline())
        except IdempotencyStoreError:
            raise
        except OUTAGES as exc:
            raise IdempotencyStoreError(f"Redis idempotency store unreachable during {what}: {exc}") from exc
        except redis_mod.ResponseError as exc:
            if _is_transient_reply(exc):
                raise IdempotencyStoreError(f"Redis cannot serve the idempotency {what} now: {exc}") from exc
            raise

    def begin(self, key: str, token: str, payload_hash: str, in_progress_ttl_ms: int, ttl_ms: int) -> BeginResult:
        args: list[Any] = [token, payload_hash, in_progress_ttl_ms, max(ttl_ms, in_progress_ttl_ms)]
        return parse_begin(self._call("begin", _BEGIN, key, args))

    def complete(self, key: str, token: str, result: bytes, ttl_ms: int) -> bool:
        return bool(self._call("complete", _COMPLETE, key, [token, result, ttl_ms]))

    def release(self, key: str, token: str) -> bool:
        return bool(self._call("release", _RELEASE, key, [token]))

    async def abegin(
        self, key: str, token: str, payload_hash: str, in_progress_ttl_ms: int, ttl_ms: int
    ) -> BeginResult:
        args: list[Any] = [token, payload_hash, in_progress_ttl_ms, max(ttl_ms, in_progress_ttl_ms)]
        return parse_begin(await self._acall("begin", _BEGIN, key, args))

    async def acomplete(self, key: str, token: str, result: bytes, ttl_ms: int) -> bool:
        return bool(await self._acall("complete", _COMPLETE, key, [token, result, ttl_ms]))

    async def arelease(self, key: str, token: str) -> bool:
        return bool(await self._acall("release", _RELEASE, key, [token]))

    def close(self) -> None:
        """Release the store's private connections (the client stays open: it is yours)."""
        self._run.close()

    async def aclose(self) -> None:
        await self._run.aclose()
