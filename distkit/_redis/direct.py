"""A direct lane for hot-path scripts: private connections of a plain redis-py client, one write and one read.

Why: on redis-py 8, ``client.evalsha(...)`` spends about as long in Python as the loopback round trip itself
(pool checkout and release under a lock, a ``poll`` of the socket for stray data, the retry wrapper, metrics
hooks). A rate-limit decision is one tiny script, so that overhead is most of its cost. The lane keeps a few
connections of its own, made from the client's own connection settings (host, auth, TLS, db, timeouts), and
talks RESP on them directly: the request is packed once into one ``bytes`` and the reply read by redis-py's
parser, so replies and errors are exactly what ``client.evalsha`` would return.

Policy, documented because it differs from the client's ``retry=`` setting:

* a connection that fails while idle-reused (server restarted, idle timeout, failover) is replaced and the
  call is sent once more on a fresh connection; a fresh connection that fails raises ``ConnectionError`` /
  ``TimeoutError`` to the caller (the limiter's failure policy applies). As with redis-py's own retries, a
  script whose reply was lost in flight may then have run twice;
* NOSCRIPT is answered by ``EVAL`` of the source (which also caches it), like :class:`~distkit._redis.Script`;
* after ``fork()`` the child drops the parent's connections (``os.register_at_fork``) and opens its own.

Only plain ``redis.Redis`` / ``redis.asyncio.Redis`` clients with a standard connection pool get a lane;
Redis Cluster, Sentinel, single-connection clients and test doubles keep the ordinary client path.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError

from distkit._redis.scripts import ArgT, KeyT, Script

_LANES: weakref.WeakSet[_LaneBase] = weakref.WeakSet()


_CACHEABLE = frozenset({bytes, str, int, float})


def _forget_parent_connections() -> None:
    for lane in list(_LANES):
        lane._idle.clear()  # the sockets belong to the parent; never write to them from the child


os.register_at_fork(after_in_child=_forget_parent_connections)


def _plain_pool(client: Any, client_cls: type, pool_classes: tuple[type, ...]) -> Any:
    """The client's pool if the client is exactly a plain redis-py client over a standard pool, else None."""
    pool = getattr(client, "connection_pool", None)
    if type(client) is not client_cls or getattr(client, "connection", None) is not None:
        return None  # subclasses (fakeredis, instrumented doubles) and single-connection clients: keep theirs
    if type(pool) not in pool_classes or getattr(pool, "cache", None) is not None:
        return None
    return pool


class _LaneBase:
    """What the sync and async lanes share: the RESP encoding and the connection bookkeeping."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._encoding: str = pool.connection_kwargs.get("encoding", "utf-8")
        self._idle: list[Any] = []
        self._heads: dict[tuple[str, int, int], bytes] = {}
        self._arg_bulks: dict[tuple[type, Any], bytes] = {}  # small repeated arguments (costs, packed params)
        _LANES.add(self)

    def _new_connection(self) -> Any:
        return self._pool.connection_class(**self._pool.connection_kwargs)

    def _checkout(self) -> tuple[Any, bool]:
        """(connection, reused): list.pop/append are atomic, so threads never share a connection."""
        try:
            return self._idle.pop(), True
        except IndexError:
            return self._new_connection(), False

    def _take_idle(self) -> list[Any]:
        idle, self._idle = self._idle, []
        return idle

    def _encode(self, value: KeyT | ArgT) -> bytes:
        if value.__class__ is bytes:
            return value
        if value.__class__ is str:
            return value.encode(self._encoding)
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, bool) or not isinstance(value, (int, float, str, bytes)):
            raise DataError(f"cannot send {value!r} to Redis")  # the same refusal as redis-py's encoder
        return repr(value).encode() if isinstance(value, float) else str(value).encode()

    def _bulk(self, value: KeyT | ArgT) -> bytes:
        b = self._encode(value)
        return b"$%d\r\n%s\r\n" % (len(b), b)

    def _arg_bulk(self, value: ArgT) -> bytes:
        """Arguments repeat (a cost of 1, a limiter's packed parameters): their RESP form is kept, keyed by type
        and value (so ``True`` never hits ``1``), when it is at most 72 bytes, for at most 4096 values."""
        if value.__class__ not in _CACHEABLE:
            return self._bulk(value)
        k = (value.__class__, value)
        b = self._arg_bulks.get(k)
        if b is None:
            b = self._bulk(value)
            if len(b) <= 72:
                if len(self._arg_bulks) >= 4096:
                    self._arg_bulks.clear()
                self._arg_bulks[k] = b
        return b

    def pack(self, command: str, head: str, keys: Sequence[KeyT], args: Sequence[ArgT]) -> bytes:
        """``command head len(keys) *keys *args`` as one RESP array; the fixed head is cached per arity."""
        n = len(keys) + len(args)
        cached = self._heads.get((head, len(keys), n))
        if cached is None:
            parts = [command.encode(), head.encode(), str(len(keys)).encode()]
            cached = b"*%d\r\n" % (n + 3) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
            if command == "EVALSHA":
                self._heads[(head, len(keys), n)] = cached
        bulk, arg_bulk = self._bulk, self._arg_bulk
        return b"".join([cached, *[bulk(k) for k in keys], *[arg_bulk(a) for a in args]])

    def pack_call(self, script: Script, keys: Sequence[KeyT], args: Sequence[ArgT]) -> bytes:
        return self.pack("EVALSHA", script.sha, keys, args)

    def pack_eval(self, script: Script, keys: Sequence[KeyT], args: Sequence[ArgT]) -> bytes:
        return self.pack("EVAL", script.source, keys, args)

    def pack_retry(
        self, script: Script, calls: Sequence[tuple[Sequence[KeyT], Sequence[ArgT]]], missed: list[int]
    ) -> bytes:
        """The calls that met NOSCRIPT again: the first as ``EVAL`` (which caches the script), the rest by SHA."""
        first, *rest = missed
        return self.pack_eval(script, *calls[first]) + b"".join(self.pack_call(script, *calls[i]) for i in rest)


class DirectLane(_LaneBase):
    """Sync lane; :meth:`for_client` returns ``None`` for clients that must keep the normal path."""

    @classmethod
    def for_client(cls, client: Any) -> DirectLane | None:
        import redis

        pool = _plain_pool(client, redis.Redis, (redis.ConnectionPool, redis.BlockingConnectionPool))
        return cls(pool) if pool is not None else None

    def _roundtrip(self, payload: bytes, replies: int) -> list[Any]:
        """Send ``payload`` and read ``replies`` answers. A reused connection that turns out dead means the server
        dropped us (restart, failover, idle timeout): every idle connection is discarded and the payload is sent
        once more on a fresh one. Error replies come back in place, so a batch is always read to its end."""
        conn, reused = self._checkout()
        try:
            return self._exchange(conn, payload, replies)
        except RedisConnectionError:
            if not reused:
                raise
        for stale in self._take_idle():
            stale.disconnect()
        return self._exchange(self._new_connection(), payload, replies)

    def _exchange(self, conn: Any, payload: bytes, replies: int) -> list[Any]:
        try:
            conn.send_packed_command([payload], check_health=False)
            out: list[Any] = []
            for _ in range(replies):
                try:
                    out.append(conn.read_response())
                except ResponseError as exc:
                    out.append(exc)
        except BaseException:
            conn.disconnect()  # dead, timed out or interrupted mid-reply: the stream position is unknown
            raise
        self._idle.append(conn)
        return out

    def close(self) -> None:
        """Disconnect the idle connections (a later call opens a new one)."""
        for conn in self._take_idle():
            conn.disconnect()

    def call(self, script: Script, keys: Sequence[KeyT], args: Sequence[ArgT] = ()) -> Any:
        """``script(keys, args)``: one round trip unless the server has not seen the script yet."""
        (reply,) = self._roundtrip(self.pack_call(script, keys, args), 1)
        if isinstance(reply, NoScriptError):
            (reply,) = self._roundtrip(self.pack_eval(script, keys, args), 1)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def call_many(self, script: Script, calls: Sequence[tuple[Sequence[KeyT], Sequence[ArgT]]]) -> list[Any]:
        """Every call in one write and one read pass; errors of single calls are returned in place."""
        if not calls:
            return []
        replies = self._roundtrip(b"".join(self.pack_call(script, k, a) for k, a in calls), len(calls))
        missed = _missed(replies)
        if missed:
            again = self._roundtrip(self.pack_retry(script, calls, missed), len(missed))
            for i, reply in zip(missed, again, strict=True):
                replies[i] = reply
        return replies


def _missed(replies: list[Any]) -> list[int]:
    """Positions answered NOSCRIPT (those calls did not run)."""
    return [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]


class AsyncDirectLane(_LaneBase):
    """The asyncio twin of :class:`DirectLane` (same packing, same policy)."""

    @classmethod
    def for_client(cls, client: Any) -> AsyncDirectLane | None:
        import redis.asyncio as aredis

        pool = _plain_pool(client, aredis.Redis, (aredis.ConnectionPool, aredis.BlockingConnectionPool))
        return cls(pool) if pool is not None else None

    async def _roundtrip(self, payload: bytes, replies: int) -> list[Any]:
        conn, reused = self._checkout()
        try:
            return await self._exchange(conn, payload, replies)
        except RedisConnectionError:
            if not reused:
                raise
        for stale in self._take_idle():
            await stale.disconnect(nowait=True)
        return await self._exchange(self._new_connection(), payload, replies)

    async def _exchange(self, conn: Any, payload: bytes, replies: int) -> list[Any]:
        try:
            await conn.send_packed_command([payload], check_health=False)
            out: list[Any] = []
            for _ in range(replies):
                try:
                    out.append(await conn.read_response())
                except ResponseError as exc:
                    out.append(exc)
        except BaseException:
            await conn.disconnect(nowait=True)  # dead, cancelled or timed out mid-reply
            raise
        self._idle.append(conn)
        return out

    async def call(self, script: Script, keys: Sequence[KeyT], args: Sequence[ArgT] = ()) -> Any:
        (reply,) = await self._roundtrip(self.pack_call(script, keys, args), 1)
        if isinstance(reply, NoScriptError):
            (reply,) = await self._roundtrip(self.pack_eval(script, keys, args), 1)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def call_many(self, script: Script, calls: Sequence[tuple[Sequence[KeyT], Sequence[ArgT]]]) -> list[Any]:
        if not calls:
            return []
        replies = await self._roundtrip(b"".join(self.pack_call(script, k, a) for k, a in calls), len(calls))
        missed = _missed(replies)
        if missed:
            again = await self._roundtrip(self.pack_retry(script, calls, missed), len(missed))
            for i, reply in zip(missed, again, strict=True):
                replies[i] = reply
        return replies

    async def aclose(self) -> None:
        for conn in self._take_idle():
            await conn.disconnect(nowait=True)


class Runner:
    """How a module runs its scripts and commands on one sync client.

    The contract every Redis-backed module codes against (the call-policy layer of ``distkit._redis``):

    * ``runner(script, keys, args, deadline=...)`` runs one script; ``runner.many(script, calls, deadline=...)``
      a batch; ``runner.command("TIME", deadline=...)`` one plain command (reply as ``client.execute_command``);
    * ``deadline`` is an absolute ``time.monotonic()`` value; ``None`` means ``now + timeout_s`` (the runner's
      documented default). The call returns or raises by then, whatever the client's ``retry=`` setting;
    * outages (connection refused/reset, timeouts, the per-client outage breaker being open) raise
      :class:`~distkit.errors.BackendUnavailableError`; error replies (``WRONGTYPE``, script errors) raise
      ``redis.ResponseError`` unchanged, for the module to map to its own typed error.
    """

    def __init__(self, client: Any, *, direct: bool = True, timeout_s: float = 5.0) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.lane = DirectLane.for_client(client) if direct else None

    def __call__(
        self, script: Script, keys: Sequence[KeyT], args: Sequence[ArgT] = (), *, deadline: float | None = None
    ) -> Any:
        if self.lane is not None:
            return self.lane.call(script, keys, args)
        return script(self.client, keys, args)

    def many(
        self,
        script: Script,
        calls: Sequence[tuple[Sequence[KeyT], Sequence[ArgT]]],
        *,
        deadline: float | None = None,
    ) -> list[Any]:
        if self.lane is not None:
            return self.lane.call_many(script, calls)
        return script.many(self.client, calls)

    def command(self, *args: KeyT | ArgT, deadline: float | None = None) -> Any:
        return self.client.execute_command(*args)

    def close(self) -> None:
        if self.lane is not None:
            self.lane.close()


class AsyncRunner:
    """The asyncio twin of :class:`Runner` (same names, same contract, awaited)."""

    def __init__(self, client: Any, *, direct: bool = True, timeout_s: float = 5.0) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.lane = AsyncDirectLane.for_client(client) if direct else None

    async def __call__(
        self, script: Script, keys: Sequence[KeyT], args: Sequence[ArgT] = (), *, deadline: float | None = None
    ) -> Any:
        if self.lane is not None:
            return await self.lane.call(script, keys, args)
        return await script.acall(self.client, keys, args)

    async def many(
        self,
        script: Script,
        calls: Sequence[tuple[Sequence[KeyT], Sequence[ArgT]]],
        *,
        deadline: float | None = None,
    ) -> list[Any]:
        if self.lane is not None:
            return await self.lane.call_many(script, calls)
        return await script.amany(self.client, calls)

    async def command(self, *args: KeyT | ArgT, deadline: float | None = None) -> Any:
        return await self.client.execute_command(*args)

    async def aclose(self) -> None:
        if self.lane is not None:
            await self.lane.aclose()
