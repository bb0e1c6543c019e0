"""Lua scripts loaded once and called by SHA.

``Script("locks", "acquire")`` reads ``distkit/locks/lua/acquire.lua``. Calls go out as ``EVALSHA``; when
a server answers NOSCRIPT (restart, failover, ``SCRIPT FLUSH``, a cluster node that never saw the
script) the call is repeated once as ``EVAL``, which also caches the script on that node. That keeps the
hot path at one round trip on plain Redis and Redis Cluster alike.

Batches (:meth:`Script.many`) go through one pipeline on plain Redis. redis-py refuses EVALSHA inside a
cluster pipeline, so on Redis Cluster a batch is sent call by call (documented, still correct).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

KeyT = str | bytes
ArgT = str | bytes | int | float


def is_cluster(client: Any) -> bool:
    """True for redis-py's sync or async ``RedisCluster`` (they have ``get_nodes``, plain clients don't)."""
    return hasattr(client, "get_nodes") and hasattr(client, "nodes_manager")


def _load(module: str, name: str) -> str:
    """The script's text, with each ``--@include <other>`` line replaced by ``lua/<other>.lua`` of the same
    module (shared preambles without copy-paste; the server still sees one self-contained script)."""
    text = resources.files(f"distkit.{module}").joinpath(f"lua/{name}.lua").read_text("utf-8")
    lines = []
    for line in text.splitlines():
        if line.startswith("--@include "):
            lines.append(_load(module, line.split(maxsplit=1)[1].strip()))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


class Script:
    """One Lua script of a distkit module, with sync and async callers sharing the same source and SHA."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, module: str, name: str) -> None:
        self.name = f"{module}/{name}"
        self.source = _load(module, name)
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"Script({self.name!r}, sha={self.sha[:8]})"

    def __call__(self, client: Any, keys: Sequence[KeyT], args: Sequence[ArgT] = ()) -> Any:
        """Run on a sync client (``Redis`` or ``RedisCluster``): one round trip unless NOSCRIPT."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)

    async def acall(self, client: Any, keys: Sequence[KeyT], args: Sequence[ArgT] = ()) -> Any:
        """Run on an asyncio client: same semantics as :meth:`__call__`."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)

    def load(self, client: Any) -> str:
        """``SCRIPT LOAD`` on the server (every primary on a cluster); returns the SHA."""
        client.script_load(self.source)
        return self.sha

    def many(self, client: Any, calls: Sequence[tuple[Sequence[KeyT], Sequence[ArgT]]]) -> list[Any]:
        """Run the script once per ``(keys, args)``: one pipelined round trip on plain Redis.

        Errors of individual calls are returned in place (``raise_on_error=False``) except NOSCRIPT, which
        triggers a load and one retry of the whole batch (scripts are idempotent only if the caller's are;
        NOSCRIPT means none of the calls ran).
        """
        if not calls:
            return []
        if is_cluster(client):
            return [self(client, k, a) for k, a in calls]
        for attempt in (0, 1):
            pipe = client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            results: list[Any] = pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                self.load(client)
                continue
            return results
        raise AssertionError("unreachable")  # pragma: no cover

    async def amany(self, client: Any, calls: Sequence[tuple[Sequence[KeyT], Sequence[ArgT]]]) -> list[Any]:
        """Async twin of :meth:`many`."""
        if not calls:
            return []
        if is_cluster(client):
            return [await self.acall(client, k, a) for k, a in calls]
        for attempt in (0, 1):
            pipe = client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                await client.script_load(self.source)
                continue
            return results
        raise AssertionError("unreachable")  # pragma: no cover
