"""The call-policy layer every Redis-backed distkit module goes through: :class:`Runner` / :class:`AsyncRunner`.

A call is one script (``runner(script, keys, args, deadline=)``), a batch of script calls (``runner.many``) or one
plain command (``runner.command``). The policy (see :mod:`distkit._redis.policy` and ``docs/redis-plumbing.md``):

* **the client's own pool.** Plain ``redis.Redis`` / ``redis.asyncio.Redis`` clients over a standard
  ``ConnectionPool`` or ``BlockingConnectionPool`` get the fast path (the *lane*): it checks a connection out of
  the client's pool and back in (so ``max_connections``, ``BlockingConnectionPool`` waits, ``health_check_interval``,
  ``client.close()`` / ``pool.disconnect()`` and fork handling all hold), writes the request as one packed
  ``bytes`` and reads the replies with redis-py's parser (replies and errors are exactly what ``evalsha`` gives).
  The checkout is the pool's own bookkeeping under the pool's lock, without redis-py's per-checkout metrics
  calls; a reused connection is checked for a closed or dirty socket (a ``poll``) before anything is sent;
* **a deadline.** Connect, handshake, write and read timeouts are capped by the time left, and so is the wait
  for a ``BlockingConnectionPool`` slot; distkit does the retries (at most the connection's ``Retry`` count,
  with its backoff, never past the deadline) and redis-py's own retries are off for the lane's connects;
* **a per-client breaker** (shared by every Runner on the pool): consecutive outages make calls fail fast;
* NOSCRIPT is answered by ``EVAL`` of the source (which also caches it); NOSCRIPT means the call did not run.

Other clients (Redis Cluster, Sentinel-managed pools, subclasses such as fakeredis, single-connection clients,
client-side caching) and ``direct=False`` use the client's own command path: still through the breaker and the
outage mapping; asyncio calls are cut at the deadline; sync calls are bounded by the client's own timeouts and
retries only (redis-py gives no way to interrupt them).
"""

from __future__ import annotations

import asyncio
import math
import os
import select
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from queue import Empty, Full
from typing import Any

from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, DataError, MaxConnectionsError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from distkit._redis import telemetry
from distkit._redis.policy import (
    Breaker,
    CircuitOpenError,
    PoolExhaustedError,
    RedisUnavailableError,
    backoff_s,
    breaker_for,
    is_outage,
    retry_budget,
    unavailable,
)
from distkit._redis.scripts import ArgT, KeyT, Script

_CACHEABLE = frozenset({bytes, str, int, float})
_NO_RETRY = Retry(NoBackoff(), 0)
_PING = b"*1\r\n$4\r\nPING\r\n"
_POLLIN = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP
_monotonic = time.monotonic
_PID = [os.getpid()]
_WAKERS: set[Any] = set()  # keeps wake-up tasks of BlockingConnectionPool waiters alive


def _after_fork() -> None:
    _PID[0] = os.getpid()


os.register_at_fork(after_in_child=_after_fork)

Calls = Sequence[tuple[Sequence[KeyT], Sequence[ArgT]]]

# the pool internals the lane's checkout uses, per pool type (another redis-py version without them: own path)
_SYNC_NEEDS = ("_available_connections", "_in_use_connections", "_lock", "make_connection", "pid", "_checkpid")
_SYNC_BLOCKING_NEEDS = ("pool", "_connections", "make_connection", "pid", "_checkpid", "timeout")
_ASYNC_NEEDS = ("_available_connections", "_in_use_connections", "get_available_connection")
_ASYNC_BLOCKING_NEEDS = (*_ASYNC_NEEDS, "_condition", "can_get_connection", "timeout")


class _DeadlinePassed(RedisTimeoutError):
    """The deadline passed before the next step was even tried: not evidence of an outage (no breaker count)."""


def _deadline_error(what: str) -> RedisTimeoutError:
    return _DeadlinePassed(f"deadline reached before {what}")


def _plain_pool(
    client: Any,
    client_cls: type,
    pool_classes: tuple[type, ...],
    conn_classes: tuple[type, ...],
    needed: tuple[str, ...],
) -> Any:
    """The client's pool if the client is exactly a plain redis-py client over a standard pool, else None."""
    pool: Any = getattr(client, "connection_pool", None)
    if type(client) is not client_cls or getattr(client, "connection", None) is not None:
        return None  # subclasses (fakeredis, instrumented doubles) and single-connection clients: keep theirs
    if type(pool) not in pool_classes or getattr(pool, "cache", None) is not None:
        return None
    if pool.connection_class not in conn_classes:
        return None  # a custom connection class may hook send/read: keep the client's path
    try:
        maint = pool.maint_notifications_enabled()  # True, False/None, or "auto" (on for RESP3 only)
    except Exception:  # older redis-py: no maintenance notifications
        maint = None
    if maint is True or (maint and str(pool.connection_kwargs.get("protocol", 2)) == "3"):
        return None  # push notifications arrive on idle sockets: redis-py handles them
    if not all(hasattr(pool, name) for name in needed):
        return None  # another redis-py version's internals: keep the client's path
    return pool


class _LaneBase:
    """What the sync and async lanes share: the RESP encoding."""

    def __init__(self, pool: Any, client: Any) -> None:
        self._pool = pool
        self._encoding: str = pool.connection_kwargs.get("encoding", "utf-8")
        self._heads: dict[tuple[str, int, int], bytes] = {}
        self._arg_bulks: dict[tuple[type, Any], bytes] = {}  # small repeated arguments (costs, packed params)
        self._callbacks: Any = getattr(client, "response_callbacks", {})
        self.breaker: Breaker = breaker_for(client)

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

    def pack_command(self, args: Sequence[KeyT | ArgT]) -> bytes:
        return b"*%d\r\n" % len(args) + b"".join(self._bulk(a) for a in args)

    def pack_retry(self, script: Script, calls: Calls, missed: list[int]) -> bytes:
        """The calls that met NOSCRIPT again: the first as ``EVAL`` (which caches the script), the rest by SHA."""
        first, *rest = missed
        return self.pack_eval(script, *calls[first]) + b"".join(self.pack_call(script, *calls[i]) for i in rest)

    def parse_command(self, args: Sequence[KeyT | ArgT], reply: Any) -> Any:
        """Apply the client's response callback, as ``client.execute_command`` does."""
        name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        cbs = self._callbacks
        if len(args) > 1 and isinstance(args[1], (str, bytes)):
            second = args[1].decode() if isinstance(args[1], bytes) else args[1]
            two = f"{name} {second}".upper()
            if two in cbs:
                return cbs[two](reply)
        if name in cbs:
            return cbs[name](reply)
        if name.upper() in cbs:
            return cbs[name.upper()](reply)
        return reply

    def _give_up(
        self, what: str, exc: BaseException, failures: int, retry: Any, deadline: float
    ) -> float | RedisUnavailableError:
        """After an outage: the backoff to sleep before the next attempt, or the error to raise."""
        now = _monotonic()
        self.breaker.failed(now)
        retries, backoff, retryable = retry_budget(retry)
        if failures > retries or not isinstance(exc, retryable):
            return unavailable(what, exc, failures)
        wait = backoff_s(backoff, failures)
        if now + wait >= deadline:
            return unavailable(f"{what} (deadline reached)", exc, failures)
        if self.breaker.is_failing_fast(now):
            err = CircuitOpenError(f"Redis outage breaker opened while retrying {what}", attempts=failures)
            err.__cause__ = exc
            return err
        return wait


def _capped(configured: float | None, remaining: float) -> float:
    return remaining if configured is None or configured > remaining else configured


def _set_parser_timeout(conn: Any, value: float | None) -> None:
    """After a connect with capped timeouts, give redis-py's parser back the configured socket timeout."""
    parser = getattr(conn, "_parser", None)
    buf = getattr(parser, "_buffer", None)
    if buf is not None and hasattr(buf, "socket_timeout"):
        buf.socket_timeout = value
    if parser is not None and hasattr(parser, "_socket_timeout"):
        parser._socket_timeout = value


class DirectLane(_LaneBase):
    """Sync fast path on a plain client's own pool; :meth:`for_client` returns ``None`` for other clients."""

    @classmethod
    def for_client(cls, client: Any) -> DirectLane | None:
        import redis
        from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection

        pool = _plain_pool(
            client,
            redis.Redis,
            (redis.ConnectionPool, redis.BlockingConnectionPool),
            (Connection, SSLConnection, UnixDomainSocketConnection),
            _SYNC_BLOCKING_NEEDS if type(getattr(client, "connection_pool", None)) is redis.BlockingConnectionPool
            else _SYNC_NEEDS,
        )
        return cls(pool, client) if pool is not None else None

    def __init__(self, pool: Any, client: Any) -> None:
        import redis
        from redis.connection import SSLConnection

        super().__init__(pool, client)
        self._blocking = type(pool) is redis.BlockingConnectionPool
        self._poll_ok = pool.connection_class is not SSLConnection  # TLS records (tickets) are not app data

    # ------------------------------------------------------------------ the pool
    def _checkout(self, deadline: float) -> Any:
        pool = self._pool
        if pool.pid != _PID[0]:
            pool._checkpid()  # forked: the pool resets itself (the parent's sockets are never used here)
        if self._blocking:
            return self._checkout_blocking(pool, deadline)
        with pool._lock:
            try:
                conn = pool._available_connections.pop()
            except IndexError:
                try:
                    conn = pool.make_connection()
                except MaxConnectionsError as exc:
                    err = PoolExhaustedError(
                        f"all {pool.max_connections} connections of the client's pool are in use "
                        "(raise max_connections or use a BlockingConnectionPool)"
                    )
                    raise err from exc
            pool._in_use_connections.add(conn)
        return conn

    def _checkout_blocking(self, pool: Any, deadline: float) -> Any:
        if getattr(pool, "_in_maintenance", False):
            return pool.get_connection()  # redis-py is moving connections (MOVING notification): its own path
        wait = deadline - _monotonic()
        if pool.timeout is not None:
            wait = min(wait, pool.timeout)
        try:
            conn = pool.pool.get(block=True, timeout=max(wait, 0.0))
        except Empty:
            raise PoolExhaustedError(
                f"no connection of the client's BlockingConnectionPool (max_connections={pool.max_connections}) "
                "became free by the deadline"
            ) from None
        if conn is None:
            try:
                conn = pool.make_connection()
            except BaseException:
                pool.pool.put_nowait(None)
                raise
        return conn

    def _release(self, conn: Any) -> None:
        pool = self._pool
        if (
            conn.pid != pool.pid
            or pool.pid != _PID[0]
            or getattr(conn, "_should_reconnect", False)
            or (self._blocking and getattr(pool, "_in_maintenance", False))
        ):
            pool.release(conn)  # redis-py's own rules: another process's connection, a reconnect request, MOVING
            return
        if self._blocking:
            try:
                pool.pool.put_nowait(conn)
            except Full:
                pass
            return
        with pool._lock:
            try:
                pool._in_use_connections.remove(conn)
            except KeyError:
                return  # the pool was reset meanwhile: this connection is not its any more
            pool._available_connections.append(conn)

    # ------------------------------------------------------------------ one connection
    def _connect(self, conn: Any, deadline: float) -> None:
        """``conn.connect()`` (handshake, auth, db, callbacks) with redis-py's retries off and every timeout
        capped by the time left."""
        remaining = deadline - _monotonic()
        if remaining <= 0:
            raise _deadline_error("connecting")
        retry, connect_timeout, sock_timeout = conn.retry, conn.socket_connect_timeout, conn.socket_timeout
        conn.retry = _NO_RETRY
        conn.socket_connect_timeout = _capped(connect_timeout, remaining)
        conn.socket_timeout = _capped(sock_timeout, remaining)
        try:
            conn.connect()
        finally:
            conn.retry, conn.socket_connect_timeout, conn.socket_timeout = retry, connect_timeout, sock_timeout
            _set_parser_timeout(conn, sock_timeout)

    def _dirty(self, conn: Any, sock: Any) -> bool:
        """A reused connection whose socket is readable was closed by the server (restart, idle timeout, CLIENT
        KILL) or has stray data: nothing of ours was sent on it yet, so reconnecting is safe."""
        if self._poll_ok:
            cached = conn.__dict__.get("_distkit_poll")
            if cached is None or cached[0] is not sock:  # one poll object per socket (making one costs more)
                poller = select.poll()
                poller.register(sock, _POLLIN)
                conn._distkit_poll = cached = (sock, poller)
            return bool(cached[1].poll(0))
        try:
            return bool(conn.can_read())
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return True

    def _ready(self, conn: Any, deadline: float) -> Any:
        sock = conn._sock
        if sock is None:
            self._connect(conn, deadline)
        elif self._dirty(conn, sock):
            conn.disconnect()
            self._connect(conn, deadline)
        elif conn.health_check_interval and _monotonic() > conn.next_health_check:
            try:
                self._exchange(conn, _PING, 1, deadline)  # a failed check: reconnect (nothing of ours sent)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                self._connect(conn, deadline)
        return conn._sock

    def _exchange(self, conn: Any, payload: bytes, replies: int, deadline: float) -> list[Any]:
        sock = conn._sock
        remaining = deadline - _monotonic()
        if remaining <= 0:
            raise _deadline_error("sending")
        configured = conn.socket_timeout
        try:
            sock.settimeout(_capped(configured, remaining))
            sock.sendall(payload)
            out: list[Any] = []
            for _ in range(replies):
                try:
                    out.append(conn.read_response())
                except ResponseError as exc:
                    out.append(exc)
            sock.settimeout(configured)
        except BaseException as exc:
            conn.disconnect()  # dead, timed out or interrupted mid-reply: the stream position is unknown
            if isinstance(exc, socket.timeout):
                raise RedisTimeoutError(f"Timeout talking to Redis: {exc}") from exc
            raise
        return out

    # ------------------------------------------------------------------ the policy
    def roundtrip(self, payload: bytes, replies: int, deadline: float, what: str) -> tuple[list[Any], int]:
        """Send ``payload`` and read ``replies`` answers by ``deadline``: (replies, attempts). Error replies come
        back in place, so a batch is always read to its end."""
        breaker = self.breaker
        now = _monotonic()
        if breaker.open_until:
            breaker.before(now, deadline)
        if now >= deadline:
            raise unavailable(what, _deadline_error("sending (the deadline had passed)"), 0)
        failures = 0
        while True:
            conn = self._checkout(deadline)
            try:
                self._ready(conn, deadline)
                out = self._exchange(conn, payload, replies, deadline)
            except AuthenticationError:
                self._release(conn)
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self._release(conn)
                if not is_outage(exc):
                    raise
                if isinstance(exc, _DeadlinePassed):
                    raise unavailable(what, exc, failures) from exc
                failures += 1
                step = self._give_up(what, exc, failures, conn.retry, deadline)
                if isinstance(step, BaseException):
                    raise step from exc
                time.sleep(step)
                continue
            except BaseException:
                self._release(conn)
                raise
            self._release(conn)
            if breaker.failures or breaker.open_until:
                breaker.succeeded()
            return out, failures + 1

    def close(self) -> None:
        """Nothing to close: the lane's connections are the client's pool's (close the client)."""

    def call(
        self, script: Script, keys: Sequence[KeyT], args: Sequence[ArgT] = (), deadline: float | None = None
    ) -> Any:
        """``script(keys, args)``: one round trip unless the server has not seen the script yet."""
        if deadline is None:
            deadline = _monotonic() + 5.0
        if not telemetry.enabled():
            return self._call(script, keys, args, deadline)[0]
        start, attempts = time.time_ns(), 0
        try:
            reply, attempts = self._call(script, keys, args, deadline)
        except BaseException as exc:
            telemetry.record(script.name, start, getattr(exc, "attempts", attempts), exc)
            raise
        telemetry.record(script.name, start, attempts, None)
        return reply

    def _call(self, script: Script, keys: Sequence[KeyT], args: Sequence[ArgT], deadline: float) -> tuple[Any, int]:
        (reply,), attempts = self.roundtrip(self.pack_call(script, keys, args), 1, deadline, script.name)
        if isinstance(reply, NoScriptError):
            (reply,), more = self.roundtrip(self.pack_eval(script, keys, args), 1, deadline, script.name)
            attempts += more
        if isinstance(reply, Exception):
            raise reply
        return reply, attempts

    def call_many(self, script: Script, calls: Calls, deadline: float | None = None) -> list[Any]:
        """Every call in one write and one read pass; errors of single calls are returned in place."""
        if not calls:
            return []
        if deadline is None:
            deadline = _monotonic() + 5.0
        tel = telemetry.enabled()
        start, attempts = (time.time_ns() if tel else 0), 0
        try:
            replies, attempts = self.roundtrip(
                b"".join(self.pack_call(script, k, a) for k, a in calls), len(calls), deadline, script.name
            )
            missed = _missed(replies)
            if missed:
                again, more = self.roundtrip(self.pack_retry(script, calls, missed), len(missed), deadline, script.name)
                attempts += more
                for i, reply in zip(missed, again, strict=True):
                    replies[i] = reply
        except BaseException as exc:
            if tel:
                telemetry.record(script.name, start, getattr(exc, "attempts", attempts), exc)
            raise
        if tel:
            telemetry.record(script.name, start, attempts, None)
        return replies

    def command(self, args: Sequence[KeyT | ArgT], deadline: float | None = None) -> Any:
        if deadline is None:
            deadline = _monotonic() + 5.0
        name = str(args[0])
        tel = telemetry.enabled()
        start, attempts = (time.time_ns() if tel else 0), 0
        try:
            (reply,), attempts = self.roundtrip(self.pack_command(args), 1, deadline, name)
            if isinstance(reply, Exception):
                raise reply
            result = self.parse_command(args, reply)
        except BaseException as exc:
            if tel:
                telemetry.record(name, start, getattr(exc, "attempts", attempts), exc)
            raise
        if tel:
            telemetry.record(name, start, attempts, None)
        return result


def _missed(replies: list[Any]) -> list[int]:
    """Positions answered NOSCRIPT (those calls did not run)."""
    return [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]


def _async_timeout(seconds: float) -> Any:
    import sys

    if sys.version_info >= (3, 11):
        import asyncio

        return asyncio.timeout(seconds)
    from async_timeout import timeout  # type: ignore[import-not-found]  # redis-py's dependency on Python 3.10

    return timeout(seconds)


class AsyncDirectLane(_LaneBase):
    """The asyncio twin of :class:`DirectLane` (same packing, same policy). Every await of a call (pool wait,
    connect, write, read) is cut at the deadline; a cancelled call disconnects its connection (the stream
    position is unknown) and returns it to the pool."""

    @classmethod
    def for_client(cls, client: Any) -> AsyncDirectLane | None:
        import redis.asyncio as aredis
        from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

        pool = _plain_pool(
            client,
            aredis.Redis,
            (aredis.ConnectionPool, aredis.BlockingConnectionPool),
            (Connection, SSLConnection, UnixDomainSocketConnection),
            _ASYNC_BLOCKING_NEEDS if type(getattr(client, "connection_pool", None)) is aredis.BlockingConnectionPool
            else _ASYNC_NEEDS,
        )
        return cls(pool, client) if pool is not None else None

    def __init__(self, pool: Any, client: Any) -> None:
        import redis.asyncio as aredis

        super().__init__(pool, client)
        self._blocking = type(pool) is aredis.BlockingConnectionPool

    async def _checkout(self, deadline: float) -> Any:
        pool = self._pool
        if self._blocking:
            remaining = deadline - _monotonic()
            if pool.timeout is not None:
                remaining = min(remaining, pool.timeout)
            try:
                async with _async_timeout(max(remaining, 0.0)), pool._condition:
                    await pool._condition.wait_for(pool.can_get_connection)
                    return pool.get_available_connection()
            except (TimeoutError, asyncio.TimeoutError, MaxConnectionsError) as exc:
                raise PoolExhaustedError(
                    f"no connection of the client's BlockingConnectionPool "
                    f"(max_connections={pool.max_connections}) became free by the deadline"
                ) from exc
        try:
            return pool.get_available_connection()  # no await: atomic on the event loop
        except MaxConnectionsError as exc:
            raise PoolExhaustedError(
                f"all {pool.max_connections} connections of the client's pool are in use "
                "(raise max_connections or use a BlockingConnectionPool)"
            ) from exc

    def _release(self, conn: Any) -> None:
        """Return the connection without awaiting (safe while being cancelled); a BlockingConnectionPool's
        waiters are woken by a small task."""
        pool = self._pool
        try:
            pool._in_use_connections.remove(conn)
        except KeyError:
            return
        pool._available_connections.append(conn)
        if self._blocking:
            task = asyncio.get_running_loop().create_task(self._wake())
            _WAKERS.add(task)
            task.add_done_callback(_WAKERS.discard)

    async def _wake(self) -> None:
        cond = self._pool._condition
        async with cond:
            cond.notify()

    async def _connect(self, conn: Any, deadline: float) -> None:
        remaining = deadline - _monotonic()
        if remaining <= 0:
            raise _deadline_error("connecting")
        retry = conn.retry
        conn.retry = _ASYNC_NO_RETRY
        try:
            async with _async_timeout(remaining):
                await conn.connect()
        except (TimeoutError, asyncio.TimeoutError) as exc:
            raise RedisTimeoutError("deadline reached while connecting") from exc
        finally:
            conn.retry = retry

    async def _ready(self, conn: Any, deadline: float) -> None:
        if not conn.is_connected:
            await self._connect(conn, deadline)
            return
        try:
            dirty = await (conn.can_read() if hasattr(conn, "can_read") else conn.can_read_destructive())
        except (RedisConnectionError, RedisTimeoutError, OSError):
            dirty = True
        if dirty:
            await conn.disconnect(nowait=True)
            await self._connect(conn, deadline)
        elif conn.health_check_interval and _monotonic() > conn.next_health_check:
            try:
                await self._exchange(conn, _PING, 1, deadline)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                await self._connect(conn, deadline)

    async def _exchange(self, conn: Any, payload: bytes, replies: int, deadline: float) -> list[Any]:
        remaining = deadline - _monotonic()
        if remaining <= 0:
            raise _deadline_error("sending")
        out: list[Any] = []
        try:
            # one timer for the write and every reply; redis-py's own read timeout is switched off (math.inf)
            # because its per-read ``timeout=`` returns None on expiry and leaves the reply unread
            async with _async_timeout(remaining):
                writer = conn._writer
                writer.write(payload)
                await writer.drain()
                for _ in range(replies):
                    try:
                        out.append(await conn.read_response(timeout=math.inf))
                    except ResponseError as exc:
                        out.append(exc)
        except BaseException as exc:
            await conn.disconnect(nowait=True)  # dead, cancelled or timed out mid-reply
            if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) and not isinstance(exc, RedisTimeoutError):
                raise RedisTimeoutError("deadline reached waiting for Redis") from exc
            raise
        return out

    async def roundtrip(self, payload: bytes, replies: int, deadline: float, what: str) -> tuple[list[Any], int]:
        breaker = self.breaker
        now = _monotonic()
        if breaker.open_until:
            breaker.before(now, deadline)
        if now >= deadline:
            raise unavailable(what, _deadline_error("sending (the deadline had passed)"), 0)
        failures = 0
        while True:
            conn = await self._checkout(deadline)
            try:
                await self._ready(conn, deadline)
                out = await self._exchange(conn, payload, replies, deadline)
            except AuthenticationError:
                self._release(conn)
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self._release(conn)
                if not is_outage(exc):
                    raise
                if isinstance(exc, _DeadlinePassed):
                    raise unavailable(what, exc, failures) from exc
                failures += 1
                step = self._give_up(what, exc, failures, conn.retry, deadline)
                if isinstance(step, BaseException):
                    raise step from exc
                await asyncio.sleep(step)
                continue
            except BaseException:
                self._release(conn)  # cancelled: no await here
                raise
            self._release(conn)
            if breaker.failures or breaker.open_until:
                breaker.succeeded()
            return out, failures + 1

    async def call(
        self, script: Script, keys: Sequence[KeyT], args: Sequence[ArgT] = (), deadline: float | None = None
    ) -> Any:
        if deadline is None:
            deadline = _monotonic() + 5.0
        tel = telemetry.enabled()
        start, attempts = (time.time_ns() if tel else 0), 0
        try:
            (reply,), attempts = await self.roundtrip(self.pack_call(script, keys, args), 1, deadline, script.name)
            if isinstance(reply, NoScriptError):
                (reply,), more = await self.roundtrip(self.pack_eval(script, keys, args), 1, deadline, script.name)
                attempts += more
            if isinstance(reply, Exception):
                raise reply
        except BaseException as exc:
            if tel:
                telemetry.record(script.name, start, getattr(exc, "attempts", attempts), exc)
            raise
        if tel:
            telemetry.record(script.name, start, attempts, None)
        return reply

    async def call_many(self, script: Script, calls: Calls, deadline: float | None = None) -> list[Any]:
        if not calls:
            return []
        if deadline is None:
            deadline = _monotonic() + 5.0
        tel = telemetry.enabled()
        start, attempts = (time.time_ns() if tel else 0), 0
        try:
            replies, attempts = await self.roundtrip(
                b"".join(self.pack_call(script, k, a) for k, a in calls), len(calls), deadline, script.name
            )
            missed = _missed(replies)
            if missed:
                again, more = await self.roundtrip(
                    self.pack_retry(script, calls, missed), len(missed), deadline, script.name
                )
                attempts += more
                for i, reply in zip(missed, again, strict=True):
                    replies[i] = reply
        except BaseException as exc:
            if tel:
                telemetry.record(script.name, start, getattr(exc, "attempts", attempts), exc)
            raise
        if tel:
            telemetry.record(script.name, start, attempts, None)
        return replies

    async def command(self, args: Sequence[KeyT | ArgT], deadline: float | None = None) -> Any:
        if deadline is None:
            deadline = _monotonic() + 5.0
        name = str(args[0])
        tel = telemetry.enabled()
        start, attempts = (time.time_ns() if tel else 0), 0
        try:
            (reply,), attempts = await self.roundtrip(self.pack_command(args), 1, deadline, name)
            if isinstance(reply, Exception):
                raise reply
            result = self.parse_command(args, reply)
        except BaseException as exc:
            if tel:
                telemetry.record(name, start, getattr(exc, "attempts", attempts), exc)
            raise
        if tel:
            telemetry.record(name, start, attempts, None)
        return result

    async def aclose(self) -> None:
        """Nothing to close: the lane's connections are the client's pool's (close the client)."""


def _async_no_retry() -> Any:
    from redis.asyncio.retry import Retry as AsyncRetry

    return AsyncRetry(NoBackoff(), 0)


_ASYNC_NO_RETRY = _async_no_retry()


# ---------------------------------------------------------------------- the client's own path


def _client_outcome(breaker: Breaker, what: str, exc: BaseException) -> BaseException:
    """Map an error of the client's own path: outages count for the breaker and become RedisUnavailableError."""
    if isinstance(exc, RedisUnavailableError):
        return exc
    if is_outage(exc):
        breaker.failed(_monotonic())
        return unavailable(what, exc, 1)
    if isinstance(exc, MaxConnectionsError):
        err = PoolExhaustedError(f"the client's pool has no free connection for {what}: {exc}")
        err.__cause__ = exc
        return err
    return exc


class Runner:
    """How a module runs its scripts and commands on one sync client.

    The contract every Redis-backed module codes against (the call-policy layer of ``distkit._redis``):

    * ``runner(script, keys, args, deadline=...)`` runs one script; ``runner.many(script, calls, deadline=...)``
      a batch; ``runner.command("TIME", deadline=...)`` one plain command (reply as ``client.execute_command``);
    * ``deadline`` is an absolute ``time.monotonic()`` value; ``None`` means ``now + timeout_s`` (the runner's
      documented default). The call returns or raises by then, whatever the client's ``retry=`` setting (on the
      fast path; see the module docstring for the client's own path);
    * outages (connection refused/reset, timeouts, the per-client outage breaker being open) raise
      :class:`~distkit._redis.policy.RedisUnavailableError`, a :class:`~distkit.errors.BackendUnavailableError`
      that is also a ``redis.ConnectionError``; error replies (``WRONGTYPE``, script errors) raise
      ``redis.ResponseError`` unchanged, for the module to map to its own typed error.

    ``direct=False`` keeps the client's own command path (its instrumentation and retries) even for plain
    clients; ``runner.lane`` is the fast path (``None`` when not used), ``runner.breaker`` the client's breaker.
    """

    def __init__(self, client: Any, *, direct: bool = True, timeout_s: float = 5.0) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.lane = DirectLane.for_client(client) if direct else None
        self.breaker = self.lane.breaker if self.lane is not None else breaker_for(client)

    def _own_path(self, what: str, fn: Callable[[], Any], deadline: float | None) -> Any:
        now = _monotonic()
        if deadline is None:
            deadline = now + self.timeout_s
        breaker = self.breaker
        tel = telemetry.enabled()
        start = time.time_ns() if tel else 0
        try:
            breaker.before(now, deadline)
            if now >= deadline:
                raise unavailable(what, _deadline_error("sending"), 0)
            try:
                out = fn()
            except BaseException as exc:
                mapped = _client_outcome(breaker, what, exc)
                if mapped is exc:
                    if isinstance(exc, ResponseError):
                        breaker.succeeded()  # the server answered: not an outage
                    raise
                raise mapped from exc
            breaker.succeeded()
        except BaseException as exc:
            if tel:
                telemetry.record(what, start, getattr(exc, "attempts", 1), exc)
            raise
        if tel:
            telemetry.record(what, start, 1, None)
        return out

    def __call__(
        self, script: Script, keys: Sequence[KeyT], args: Sequence[ArgT] = (), *, deadline: float | None = None
    ) -> Any:
        lane = self.lane
        if lane is not None:
            return lane.call(script, keys, args, _monotonic() + self.timeout_s if deadline is None else deadline)
        return self._own_path(script.name, lambda: script(self.client, keys, args), deadline)

    def many(self, script: Script, calls: Calls, *, deadline: float | None = None) -> list[Any]:
        lane = self.lane
        if lane is not None:
            return lane.call_many(script, calls, _monotonic() + self.timeout_s if deadline is None else deadline)
        return self._own_path(script.name, lambda: script.many(self.client, calls), deadline)  # type: ignore[no-any-return]

    def command(self, *args: KeyT | ArgT, deadline: float | None = None) -> Any:
        lane = self.lane
        if lane is not None:
            return lane.command(args, _monotonic() + self.timeout_s if deadline is None else deadline)
        return self._own_path(str(args[0]), lambda: self.client.execute_command(*args), deadline)

    def close(self) -> None:
        """Nothing to release: connections belong to the client's pool (``client.close()`` closes them)."""


class AsyncRunner:
    """The asyncio twin of :class:`Runner` (same names, same contract, awaited). On the client's own path
    (Cluster, doubles, ``direct=False``) the call is cancelled at its deadline."""

    def __init__(self, client: Any, *, direct: bool = True, timeout_s: float = 5.0) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.lane = AsyncDirectLane.for_client(client) if direct else None
        self.breaker = self.lane.breaker if self.lane is not None else breaker_for(client)

    async def _own_path(self, what: str, fn: Callable[[], Awaitable[Any]], deadline: float | None) -> Any:
        now = _monotonic()
        if deadline is None:
            deadline = now + self.timeout_s
        breaker = self.breaker
        tel = telemetry.enabled()
        start = time.time_ns() if tel else 0
        try:
            breaker.before(now, deadline)
            if now >= deadline:
                raise unavailable(what, _deadline_error("sending"), 0)
            try:
                async with _async_timeout(deadline - now):
                    out = await fn()
            except (TimeoutError, asyncio.TimeoutError) as exc:
                raise _client_outcome(breaker, what, RedisTimeoutError(f"deadline reached during {what}")) from exc
            except BaseException as exc:
                mapped = _client_outcome(breaker, what, exc)
                if mapped is exc:
                    if isinstance(exc, ResponseError):
                        breaker.succeeded()  # the server answered: not an outage
                    raise
                raise mapped from exc
            breaker.succeeded()
        except BaseException as exc:
            if tel:
                telemetry.record(what, start, getattr(exc, "attempts", 1), exc)
            raise
        if tel:
            telemetry.record(what, start, 1, None)
        return out

    async def __call__(
        self, script: Script, keys: Sequence[KeyT], args: Sequence[ArgT] = (), *, deadline: float | None = None
    ) -> Any:
        lane = self.lane
        if lane is not None:
            return await lane.call(script, keys, args, _monotonic() + self.timeout_s if deadline is None else deadline)
        return await self._own_path(script.name, lambda: script.acall(self.client, keys, args), deadline)

    async def many(self, script: Script, calls: Calls, *, deadline: float | None = None) -> list[Any]:
        lane = self.lane
        if lane is not None:
            return await lane.call_many(script, calls, _monotonic() + self.timeout_s if deadline is None else deadline)
        return await self._own_path(script.name, lambda: script.amany(self.client, calls), deadline)  # type: ignore[no-any-return]

    async def command(self, *args: KeyT | ArgT, deadline: float | None = None) -> Any:
        lane = self.lane
        if lane is not None:
            return await lane.command(args, _monotonic() + self.timeout_s if deadline is None else deadline)
        return await self._own_path(str(args[0]), lambda: self.client.execute_command(*args), deadline)

    async def aclose(self) -> None:
        """Nothing to release: connections belong to the client's pool (``await client.aclose()`` closes them)."""
