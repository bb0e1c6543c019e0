"""Structural types for the clients distkit accepts, so public signatures need not say ``Any``.

redis-py types every command as ``Awaitable[T] | T`` for its sync and asyncio clients alike, so what tells them
apart is the context-manager protocol (``__enter__`` vs ``__aenter__``) and ``aclose``. These protocols accept
``redis.Redis``, ``redis.RedisCluster``, ``fakeredis.FakeRedis`` (sync) and ``redis.asyncio.Redis`` /
``RedisCluster`` (async),
and mypy rejects an asyncio client where a sync one is expected and the reverse::

    from distkit._types import AsyncRedisLike, SyncRedisLike

    def make_store(client: SyncRedisLike) -> ...: ...

They are ``runtime_checkable`` for ``isinstance`` checks of the members' presence; use :func:`is_async_client`
to tell the two kinds apart at run time (``isinstance`` cannot see whether a method is a coroutine function).
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class SyncRedisLike(Protocol):
    """A synchronous redis-py client: ``redis.Redis``, ``redis.RedisCluster`` or a subclass (``FakeRedis``)."""

    def execute_command(self, *args: Any, **options: Any) -> Any: ...

    def pipeline(self, *args: Any, **kwargs: Any) -> Any: ...

    def pubsub(self, *args: Any, **kwargs: Any) -> Any: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *args: Any) -> Any: ...


@runtime_checkable
class AsyncRedisLike(Protocol):
    """An asyncio redis-py client: ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster``."""

    async def execute_command(self, *args: Any, **options: Any) -> Any: ...

    def pipeline(self, *args: Any, **kwargs: Any) -> Any: ...

    def pubsub(self, *args: Any, **kwargs: Any) -> Any: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *args: Any) -> Any: ...


RedisLike = SyncRedisLike | AsyncRedisLike


def is_async_client(client: object) -> bool:
    """True for an asyncio redis-py client (its ``execute_command`` is a coroutine function)."""
    return inspect.iscoroutinefunction(getattr(client, "execute_command", None))
