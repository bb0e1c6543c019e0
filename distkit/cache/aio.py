"""AsyncHotKeyCache: the asyncio twin of :class:`~distkit.cache.HotKeyCache` over a ``redis.asyncio`` client.

Same arguments, same keys, same Lua scripts, same envelope and the same guarantees (one reload per key across
processes and across sync and async caches, stale while reloading, XFetch, fail-safe, soft/hard timeouts, null
markers, jitter, backplane), built on tasks instead of threads. The configuration, the L1 and every decision
that needs no I/O come from a thread-free :class:`HotKeyCache` core, so the two cannot drift apart.

Loaders may be ``async def`` (awaited on the loop) or plain functions (run with ``asyncio.to_thread``).
The backplane listener is one task per cache object, started on the first ``get``/``set`` and stopped by
:meth:`AsyncHotKeyCache.aclose`. An object belongs to one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, cast

from distkit._redis import AsyncRunner
from distkit.cache.entry import Entry, decode, encode, rand_open, xfetch
from distkit.cache.hotkey import (
    _ACQUIRE,
    _INVALIDATE,
    _LOAD_WRITE,
    _MIN_DELTA_MS,
    _OUTAGES,
    _RELEASE,
    _SET,
    HotKeyCache,
    _count,
)
from distkit.errors import BackendUnavailableError, CacheLoadTimeoutError, InvalidCacheConfigError

if TYPE_CHECKING:
    from distkit._types import AsyncRedisLike

log = logging.getLogger("distkit.cache")

F = TypeVar("F", bound=Callable[..., Any])


class AsyncHotKeyCache:
    """See :class:`~distkit.cache.HotKeyCache`; every method is awaited. ``locks`` is a
    :class:`distkit.locks.AsyncLocks`."""

    def __init__(self, redis_client: AsyncRedisLike, **kwargs: Any) -> None:
        backplane = kwargs.pop("backplane", True)
        self._core = HotKeyCache(redis_client, backplane=False, **kwargs)  # validation, L1, pure helpers
        self._use_backplane = backplane
        self.client = redis_client
        self.runner = AsyncRunner(redis_client, timeout_s=self._core.redis_timeout_s)
        self._flights: dict[str, asyncio.Future[Entry | None]] = {}
        self._reads: dict[tuple[str, int], asyncio.Task[Entry | None]] = {}  # L2 reads under way (_shared_read)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._detached: set[asyncio.Task[Any]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.subscriptions = 0
        self.disconnects = 0
        self.closed = False

    # the core's attributes, read through (they are re-created in a forked child)
    @property
    def namespace(self) -> str:
        return self._core.namespace

    @property
    def stats(self) -> Any:
        return self._core.stats

    @property
    def local(self) -> Any:
        return self._core.local

    @property
    def connected(self) -> asyncio.Event:
        return self._connected

    # ------------------------------------------------------------------ lifecycle

    async def _ensure_listener(self) -> None:
        if self._listener is None and self._use_backplane and self.local.enabled and not self.closed:
            loop = asyncio.get_running_loop()
            self._listener = loop.create_task(self._listen(), name=f"distkit-cache-{self.namespace}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._connected.wait(), 2.0)

    async def _listen(self) -> None:
        backoff = 0.02
        while not self.closed:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self._core.channel)
                while not self.closed:
                    msg = await pubsub.get_message(timeout=0.25)
                    if msg is not None:
                        backoff = 0.02
                        self._handle(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._connected.clear()
                self.disconnects += 1
                log.warning("distkit.cache backplane %s lost (%r); L1 bounded by local_ttl_s; retrying in %.2f s",
                            self._core.channel, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "subscribe":
            self.subscriptions += 1
            if self.subscriptions > 1:
                self.local.clear()  # messages published while we were away are lost
            self._connected.set()
        elif kind == "message":
            data = msg.get("data")
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
            origin, _, key = text.partition("|")
            if origin != self._core.instance_id:
                self.local.pop(key)

    async def aclose(self) -> None:
        """Stop the listener and background loads' bookkeeping, drop the L1 (idempotent)."""
        self.closed = True
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:  # background reloads and refreshes: their callers already have an answer
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        self.local.clear()
        await self.runner.aclose()

    async def __aenter__(self) -> AsyncHotKeyCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        """A background load whose caller left at the soft timeout: report its failure here (fail-safe)."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved, so asyncio never warns "exception was never retrieved"
        detached = task in self._detached
        self._detached.discard(task)
        if exc is not None and detached:
            self._core.stats.add("fail_safe")
            _count("fail_safe", self.namespace)
            log.warning("distkit.cache: background reload failed (%r); the stale value stays", exc)

    # ------------------------------------------------------------------ read path

    async def get(self, key: str, loader: Callable[[str], Any] | None = None) -> Any:
        core = self._core
        now = core.clock()
        hit = self.local.get(key, now)
        if hit is not None and now < hit.expires_ms:
            core.stats.l1_hits += 1
            if core.beta:
                self._maybe_refresh(key, hit, now, loader)
            return hit.value
        core._check()
        await self._ensure_listener()
        data_key, _ = core._keys(key)
        version = self.local.version
        entry = await self._shared_read(data_key, version)
        now = core.clock()
        if entry is not None and entry.fresh(now):
            core.stats.add("l2_hits")
            self.local.put(key, entry, now, version)
            if core.beta:
                self._maybe_refresh(key, entry, now, loader)
            return entry.value
        stale = entry
        if hit is not None and (stale is None or hit.expires_ms > stale.expires_ms):
            stale = hit
        core.stats.add("misses")
        return await self._reload(key, self._load_fn(key, loader), stale if stale and stale.usable(now) else None)

    def _load_fn(self, key: str, loader: Callable[[str], Any] | None) -> Callable[[], Any]:
        fn = loader if loader is not None else self._core.loader
        if fn is None:
            raise InvalidCacheConfigError(f"no loader for {key!r}: pass loader= to AsyncHotKeyCache or to get()")
        if inspect.iscoroutinefunction(fn):
            return functools.partial(fn, key)

        async def run_sync() -> Any:
            return await asyncio.to_thread(fn, key)

        return run_sync

    def _shared_read(self, data_key: str, version: int) -> Awaitable[Entry | None]:
        """The L2 entry, one read at a time per key in this process: concurrent gets of a hot key share it (100
        tasks asking at once would else take 100 connections of the client's pool, whose default redis-py
        limit is 100). Keyed by the L1 version as well, so a get that starts after a write or an invalidation in
        this process never joins a read that began before it. The read runs as a task of its own, so a caller
        cancelled or timing out leaves it to the others."""
        slot = (data_key, version)
        shared = self._reads.get(slot)
        if shared is None:
            shared = self._reads[slot] = self._spawn(self._read(data_key))
            shared.add_done_callback(functools.partial(self._read_done, slot))
        return asyncio.shield(shared)

    def _read_done(self, slot: tuple[str, int], task: asyncio.Task[Entry | None]) -> None:
        if self._reads.get(slot) is task:
            del self._reads[slot]

    async def _read(self, data_key: str) -> Entry | None:
        try:
            raw = await self.runner.command("GET", data_key, deadline=self._core._deadline())
        except _OUTAGES as exc:
            log.warning("distkit.cache %s: Redis unavailable for GET (%s); reloading in this process", data_key, exc)
            return None
        return None if raw is None else decode(raw, self._core.codec)

    async def _try_lock(self, lock_key: str, token: str) -> bool | None:
        try:
            return bool(await self.runner(_ACQUIRE, [lock_key], [token, self._core._lease_ms],
                                          deadline=self._core._deadline()))
        except _OUTAGES as exc:
            log.warning("distkit.cache %s: Redis unavailable for the reload lock (%s)", lock_key, exc)
            return None

    async def _release(self, lock_key: str, token: str) -> None:
        with contextlib.suppress(*_OUTAGES):
            await self.runner(_RELEASE, [lock_key], [token], deadline=self._core._deadline())

    async def _reload(self, key: str, load: Callable[[], Any], usable: Entry | None) -> Any:
        core = self._core
        while True:
            flight = self._flights.get(key)
            if flight is None or flight.done():
                return await self._lead(key, load, usable)
            if usable is not None:
                core.stats.add("stale")
                _count("stale", core.namespace)
                return usable.value
            core.stats.add("waits")
            try:
                entry = await asyncio.wait_for(asyncio.shield(flight), core.hard_timeout_s)
            except asyncio.TimeoutError:
                raise CacheLoadTimeoutError(f"no value for {key!r} within {core.hard_timeout_s} s") from None
            if entry is not None:
                return entry.value

    async def _lead(self, key: str, load: Callable[[], Any], usable: Entry | None) -> Any:
        core = self._core
        flight: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        started = False
        try:
            data_key, lock_key = core._keys(key)
            token = uuid.uuid4().hex
            got = await self._try_lock(lock_key, token)
            if got is False:
                if usable is not None:
                    core.stats.add("stale")
                    _count("stale", core.namespace)
                    return usable.value
                other = await self._await_other(key, data_key, lock_key, token, flight)
                if isinstance(other, Entry):
                    return other.value
                got = True
            task = self._spawn(self._run_load(key, load, token if got else None, usable, flight))
            started = True
            done, _ = await asyncio.wait({task}, timeout=core.soft_timeout_s if usable else core.hard_timeout_s)
            if not done:
                if usable is not None:
                    core.stats.add("soft_timeouts")
                    self._detached.add(task)
                    return usable.value  # the task keeps running and writes its result
                task.cancel()
                core.stats.add("abandoned")
                raise CacheLoadTimeoutError(
                    f"loader for {key!r} did not finish within the hard timeout ({core.hard_timeout_s} s) and "
                    "there is no stale value; raise load_timeout_s[1] or speed up the loader"
                )
            exc = task.exception()
            if exc is None:
                entry = task.result()
                return entry.value
            if usable is not None and usable.usable(core.clock()) and isinstance(exc, Exception):
                return core._fail_safe(key, usable, exc)
            raise exc
        finally:
            if not started:  # no load of ours: release in-process followers (they retry or serve stale)
                self._settle(key, flight, None)

    async def _await_other(self, key: str, data_key: str, lock_key: str, token: str,
                           flight: asyncio.Future[Entry | None]) -> Entry | bool:
        """No stale value and another process reloads: re-read L2 every 5 → 50 ms; take the lock if it frees."""
        core = self._core
        core.stats.add("waits")
        deadline = time.monotonic() + core.hard_timeout_s
        delay = 0.005
        while time.monotonic() < deadline:
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.05)
            version = self.local.version
            entry = await self._read(data_key)
            now = core.clock()
            if entry is not None and entry.fresh(now):
                self.local.put(key, entry, now, version)
                flight.set_result(entry)
                return entry
            if await self._try_lock(lock_key, token) is not False:
                return True
        flight.set_result(None)
        raise CacheLoadTimeoutError(f"no value for {key!r} within {core.hard_timeout_s} s: another process reloads")

    @contextlib.asynccontextmanager
    async def _read_locked(self, key: str) -> AsyncIterator[None]:
        locks = self._core.locks
        if locks is None:
            yield
            return
        lock = locks.rw_lock(f"cache:{key}").read_lock()
        if not await lock.acquire(timeout=self._core.hard_timeout_s):
            raise CacheLoadTimeoutError(f"read lock of {key!r} not granted within {self._core.hard_timeout_s} s")
        try:
            yield
        finally:
            await lock.release()

    async def _run_load(self, key: str, load: Callable[[], Any], token: str | None, seen: Entry | None,
                        flight: asyncio.Future[Entry | None]) -> Entry:
        core = self._core
        data_key, lock_key = core._keys(key)
        try:
            if token is not None:  # double-checked, as in the sync cache
                version = self.local.version
                current = await self._read(data_key)
                now = core.clock()
                newer = current is not None and (seen is None or current.expires_ms > seen.expires_ms)
                if current is not None and newer and current.fresh(now):
                    await self._release(lock_key, token)
                    self.local.put(key, current, now, version)
                    self._settle(key, flight, current)
                    return current
            core.stats.add("loads")
            _count("loads", core.namespace)
            t0 = time.monotonic()
            async with self._read_locked(key):
                value = await asyncio.wait_for(load(), core.hard_timeout_s)
                now = core.clock()
                entry = core._entry(value, now, round((time.monotonic() - t0) * 1000))
                version = self.local.version
                written = True
                if token is not None:
                    try:
                        written = bool(await self.runner(
                            _LOAD_WRITE, [data_key, lock_key],
                            [token, encode(entry, core.codec), core._physical_ms(entry, now), core.channel,
                             core._message(key)],
                            deadline=core._deadline(),
                        ))
                    except _OUTAGES as exc:
                        log.warning("distkit.cache %s: Redis unavailable to store the loaded value (%s)", key, exc)
            if written:
                self.local.put(key, entry, core.clock(), version)
            self._settle(key, flight, entry)
            return entry
        except BaseException as exc:
            if token is not None:
                await asyncio.shield(self._release(lock_key, token))
            self._settle(key, flight, None)
            if isinstance(exc, asyncio.TimeoutError):
                core.stats.add("abandoned")
                raise CacheLoadTimeoutError(f"load of {key!r} passed the hard timeout") from None
            raise

    def _settle(self, key: str, flight: asyncio.Future[Entry | None], entry: Entry | None) -> None:
        if not flight.done():
            flight.set_result(entry)
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _maybe_refresh(self, key: str, entry: Entry, now: int, loader: Callable[[str], Any] | None) -> None:
        core = self._core
        delta = max(entry.delta_ms, _MIN_DELTA_MS)
        if entry.expires_ms - now > 30 * core.beta * delta:
            return
        next_draw = core._next_draw.get(key)
        if next_draw is not None and now < next_draw:
            return
        core._next_draw[key] = now + max(1, delta // 20)
        if not xfetch(now, entry, core.beta, rand_open(), _MIN_DELTA_MS) or key in self._flights:
            return
        if loader is None and core.loader is None:
            return
        flight: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        core.stats.add("early_refreshes")
        self._spawn(self._refresh(key, self._load_fn(key, loader), entry, flight))

    async def _refresh(self, key: str, load: Callable[[], Any], entry: Entry,
                       flight: asyncio.Future[Entry | None]) -> None:
        _, lock_key = self._core._keys(key)
        token = uuid.uuid4().hex
        if await self._try_lock(lock_key, token) is not True:
            self._settle(key, flight, None)
            return
        try:
            await self._run_load(key, load, token, entry, flight)
        except Exception as exc:
            self._core.stats.add("fail_safe")
            _count("fail_safe", self.namespace)
            log.warning("distkit.cache %s: background refresh failed (%r); the current value stays", key, exc)

    # ------------------------------------------------------------------ write path

    @contextlib.asynccontextmanager
    async def write_lock(self, key: str) -> AsyncIterator[None]:
        """Hold ``key``'s write lock (``AsyncLocks.rw_lock``); a no-op without ``locks=``."""
        locks = self._core.locks
        if locks is None:
            yield
            return
        async with locks.rw_lock(f"cache:{key}").write_lock():
            yield

    async def set(self, key: str, value: Any) -> None:
        core = self._core
        core._check()
        await self._ensure_listener()
        data_key, lock_key = core._keys(key)
        now = core.clock()
        entry = core._entry(value, now, 0)
        async with self.write_lock(key):
            try:
                await self.runner(_SET, [data_key, lock_key],
                                  [encode(entry, core.codec), core._physical_ms(entry, now), core.channel,
                                   core._message(key)], deadline=core._deadline())
            except BackendUnavailableError:
                raise
            except _OUTAGES as exc:
                raise BackendUnavailableError(f"distkit.cache set of {key!r}: Redis unavailable; retry it") from exc
            self.local.put(key, entry, now, bump=True)

    async def invalidate(self, key: str) -> None:
        core = self._core
        core._check()
        data_key, lock_key = core._keys(key)
        async with self.write_lock(key):
            self.local.pop(key)
            try:
                await self.runner(_INVALIDATE, [data_key, lock_key], [core.channel, core._message(key)],
                                  deadline=core._deadline())
            except BackendUnavailableError:
                raise
            except _OUTAGES as exc:
                raise BackendUnavailableError(
                    f"distkit.cache invalidate of {key!r}: Redis unavailable; retry it"
                ) from exc
            self.local.pop(key)

    def cached(self, *, key: Callable[..., str]) -> Callable[[F], F]:
        """``@cache.cached(key=lambda sku: f"sku:{sku}")`` on an ``async def`` (or a plain function, which then
        runs on a worker thread when the key reloads); the wrapper is always ``async``."""

        def decorate(fn: F) -> F:
            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                if inspect.iscoroutinefunction(fn):
                    async def load(_key: str) -> Any:
                        return await fn(*args, **kwargs)
                else:
                    def load(_key: str) -> Any:  # type: ignore[misc]
                        return fn(*args, **kwargs)
                return await self.get(key(*args, **kwargs), load)

            return cast(F, wrapper)

        return decorate
