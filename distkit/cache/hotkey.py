"""HotKeyCache: L1 (in-process LRU) → L2 (Redis) → one reload across all processes, resilient like FusionCache.

Read path of :meth:`HotKeyCache.get`:

1. **L1** hit with a fresh entry: return it (no I/O). XFetch may start a background refresh.
2. **L2** ``GET``: a fresh entry goes into the L1 and is returned (XFetch again).
3. Expired or missing: **one** reload. In this process one thread leads (a flight per key); across processes
   the leader takes a non-blocking Redis lock (``SET NX PX`` in ``lua/acquire.lua``). Everybody else gets the
   stale value at once; with no stale value they wait (bounded by the hard timeout) for the holder's result.
4. The loader runs on its own thread. With a stale value the caller waits at most the **soft** timeout, then
   gets the stale value while the load finishes in the background; a load slower than the **hard** timeout is
   abandoned (its result is never written). A loader error with a stale value inside ``stale_for_s`` is
   **fail-safe**: logged, counted (``distkit.cache.fail_safe``), the stale value served (and reused in this
   process for ``fail_safe_throttle_s`` before the next attempt); after ``stale_for_s`` the error propagates.

Writes (:meth:`set`, :meth:`invalidate`) and finished reloads are single Lua scripts that also publish on the
backplane (:mod:`distkit.cache.backplane`). A writer's script deletes the reload lock, and a reload only writes
while it still owns that lock, so a load that started before a write never overwrites it.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import inspect
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from distkit import _metrics
from distkit._redis import Runner, Script
from distkit._redis import key as redis_key
from distkit._types import is_async_client
from distkit.cache.backplane import Backplane
from distkit.cache.entry import Codec, Entry, JsonCodec, decode, encode, jittered_ms, rand_open, xfetch
from distkit.cache.local import LocalCache
from distkit.clock import Clock, system_clock
from distkit.errors import BackendUnavailableError, CacheLoadTimeoutError, InvalidCacheConfigError

if TYPE_CHECKING:
    from distkit._types import RedisLike
    from distkit.locks import AsyncLocks, Locks

log = logging.getLogger("distkit.cache")

F = TypeVar("F", bound=Callable[..., Any])
Loader = Callable[[str], Any]

_OUTAGES = (BackendUnavailableError, RedisConnectionError, RedisTimeoutError, OSError)

_ACQUIRE = Script("cache", "acquire")
_RELEASE = Script("cache", "release")
_LOAD_WRITE = Script("cache", "load_write")
_SET = Script("cache", "set")
_INVALIDATE = Script("cache", "invalidate")

_live: weakref.WeakSet[HotKeyCache] = weakref.WeakSet()
_retired: dict[tuple[str, str], int] = {}  # the stats of caches since garbage-collected (see HotKeyCache.__del__)

_MIN_DELTA_MS = 10

_COUNTERS = {
    n: _metrics.counter(f"distkit.cache.{n}", "1", what)
    for n, what in (
        ("fail_safe", "stale values served because a reload failed or timed out"),
        ("loads", "loader calls"),
        ("stale", "stale values served while another caller reloads"),
    )
}


def _counts(cache: HotKeyCache) -> dict[tuple[str, str], int]:
    st = cache.stats
    return {(cache.namespace, result): n for result, n in (
        ("l1_hit", st.l1_hits), ("l2_hit", st.l2_hits), ("miss", st.misses), ("early_refresh", st.early_refreshes))}


def _from_stats() -> dict[tuple[str, str], int]:
    """Per (namespace, result): the Stats of this process's caches, read at metric collection (the live ones plus
    what collected ones had counted, so the observable counters never go down)."""
    live = list(_live)  # strong references first: a cache missing here has already retired its counts
    totals = dict(_retired)
    for cache in live:
        for k, n in _counts(cache).items():
            totals[k] = totals.get(k, 0) + n
    return totals


_REQUESTS = _metrics.observable_counter(
    "distkit.cache.requests", "1", "get() calls of live caches: l1_hit, l2_hit, miss (no fresh value)",
    lambda: [(float(n), {"namespace": ns, "result": r}) for (ns, r), n in _from_stats().items()
             if r != "early_refresh"],
)
_EARLY = _metrics.observable_counter(
    "distkit.cache.early_refreshes", "1", "probabilistic early reloads started by live caches",
    lambda: [(float(n), {"namespace": ns}) for (ns, r), n in _from_stats().items() if r == "early_refresh"],
)


def _count(name: str, namespace: str) -> None:
    """OpenTelemetry counters ``distkit.cache.<name>{namespace}`` (no-ops without a meter provider)."""
    if _metrics.enabled():
        _COUNTERS[name].add(1, {"namespace": namespace})


class Stats:
    """Counters of one cache object (this process), for tests and dashboards."""

    __slots__ = ("_lock", "abandoned", "early_refreshes", "fail_safe", "l1_hits", "l2_hits", "loads", "misses",
                 "soft_timeouts", "stale", "waits")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.l1_hits = 0  # approximate (counted without a lock on the hot path)
        self.l2_hits = 0
        self.loads = 0  # loader calls started in this process
        self.early_refreshes = 0  # background XFetch reloads started
        self.stale = 0  # stale values served because another caller was reloading
        self.soft_timeouts = 0  # stale values served because our own load passed the soft timeout
        self.fail_safe = 0  # stale values served because the load failed
        self.abandoned = 0  # loads that passed the hard timeout
        self.waits = 0  # callers that had no value and waited for another caller's load
        self.misses = 0  # calls that found no fresh value (stale served, waited or loaded themselves)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        return {n: getattr(self, n) for n in self.__slots__ if n != "_lock"}


class _Flight:
    """One reload of one key in this process: the leader's load, which in-process followers wait on."""

    __slots__ = ("abandoned", "deadline", "detached", "done", "entry", "error")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  # time.monotonic() after which followers stop trusting it
        self.done = threading.Event()
        self.entry: Entry | None = None
        self.error: BaseException | None = None
        self.abandoned = False  # past the hard timeout: the result must not be written
        self.detached = False  # the caller left at the soft timeout with the stale value: report failures here

    def finish(self, entry: Entry | None = None, error: BaseException | None = None) -> None:
        self.entry, self.error = entry, error
        self.done.set()


class _Read:
    """One L2 read of one key under way in this process: threads that miss the L1 meanwhile wait for it."""

    __slots__ = ("done", "entry", "ok")

    def __init__(self) -> None:
        self.done: threading.Event | None = None  # made by the first follower (under the flights lock)
        self.entry: Entry | None = None
        self.ok = False


def _seconds(what: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (positive and value == 0):
        need = "> 0" if positive else ">= 0"
        raise InvalidCacheConfigError(f"{what} must be a number of seconds {need}, got {value!r}")
    return float(value)


class HotKeyCache:
    """A two-level, stampede-proof, fail-safe cache over one Redis client. See docs/cache.md.

    ``loader(key)`` produces the value of a key (``None`` means "no such id" and is cached as a null marker for
    ``null_ttl_s``); :meth:`get` may also take a per-call loader, and :meth:`cached` builds one from the
    decorated function. ``early_refresh`` is ``True`` (XFetch with beta 1), ``False`` or the beta itself
    (larger refreshes earlier). ``load_timeout_s`` is ``(soft, hard)``. ``locks`` (a
    :class:`distkit.locks.Locks`) makes writers hold the key's write lock and reloads its read lock.
    """

    def __init__(
        self,
        redis_client: RedisLike,
        *,
        namespace: str = "distkit",
        loader: Loader | None = None,
        ttl_s: float = 300,
        jitter: float = 0.1,
        local_ttl_s: float = 5,
        max_local_entries: int = 10_000,
        early_refresh: bool | float = True,
        null_ttl_s: float = 30,
        stale_for_s: float = 600,
        load_timeout_s: tuple[float, float] = (0.1, 5.0),
        locks: Locks | AsyncLocks | None = None,
        codec: Codec | None = None,
        clock: Clock | None = None,
        redis_timeout_s: float = 0.5,
        fail_safe_throttle_s: float = 1.0,
        backplane: bool = True,
    ) -> None:
        if redis_client is None:
            raise InvalidCacheConfigError("redis_client is required: Settings.from_env().redis()")
        if not isinstance(namespace, str) or not namespace or "|" in namespace:
            raise InvalidCacheConfigError(f"namespace must be a non-empty str without '|', got {namespace!r}")
        self.ttl_s = _seconds("ttl_s", ttl_s, positive=True)
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter < 1:
            raise InvalidCacheConfigError(f"jitter must be a fraction in [0, 1), got {jitter!r}")
        self.jitter = float(jitter)
        self.local_ttl_s = _seconds("local_ttl_s", local_ttl_s)
        if isinstance(max_local_entries, bool) or not isinstance(max_local_entries, int) or max_local_entries < 0:
            raise InvalidCacheConfigError(f"max_local_entries must be an int >= 0, got {max_local_entries!r}")
        if isinstance(early_refresh, bool):
            self.beta = 1.0 if early_refresh else 0.0
        elif isinstance(early_refresh, int | float) and early_refresh >= 0:
            self.beta = float(early_refresh)
        else:
            raise InvalidCacheConfigError(f"early_refresh must be a bool or an XFetch beta >= 0, got {early_refresh!r}")
        self.null_ttl_s = _seconds("null_ttl_s", null_ttl_s, positive=True)
        self.stale_for_s = _seconds("stale_for_s", stale_for_s)
        try:
            soft, hard = load_timeout_s
        except (TypeError, ValueError):
            raise InvalidCacheConfigError(
                f"load_timeout_s must be (soft, hard) seconds, got {load_timeout_s!r}"
            ) from None
        self.soft_timeout_s = _seconds("load_timeout_s[0] (soft)", soft)
        self.hard_timeout_s = _seconds("load_timeout_s[1] (hard)", hard, positive=True)
        if self.soft_timeout_s > self.hard_timeout_s:
            raise InvalidCacheConfigError(f"soft timeout {soft} must not exceed hard timeout {hard}")
        self.redis_timeout_s = _seconds("redis_timeout_s", redis_timeout_s, positive=True)
        self.fail_safe_throttle_s = _seconds("fail_safe_throttle_s", fail_safe_throttle_s)
        if loader is not None and not callable(loader):
            raise InvalidCacheConfigError("loader must be callable: loader(key) -> value (None = no such id)")
        if locks is not None and getattr(locks, "async_client", None) not in (None, is_async_client(redis_client)):
            # a sync cache's acquire() on AsyncLocks returns an un-awaited coroutine: it would reload unlocked
            raise InvalidCacheConfigError(
                f"locks= must match the client: Locks with a sync client, AsyncLocks with an asyncio one (got "
                f"{type(locks).__name__} with {type(redis_client).__name__})"
            )
        self.client = redis_client
        self.namespace = namespace
        self.loader = loader
        self.locks: Any = locks  # Locks (this class) or AsyncLocks (the asyncio twin drives it)
        self.codec: Codec = codec if codec is not None else JsonCodec()
        self.clock: Clock = clock if clock is not None else system_clock
        self.channel = f"distkit:cache:{namespace}"
        self.instance_id = uuid.uuid4().hex[:12]
        self.stats = Stats()
        self._use_backplane = backplane
        self._max_local = max_local_entries
        self._lease_ms = round((self.hard_timeout_s + 1.0) * 1000)
        self.closed = False
        self._new_state()
        if self._use_backplane and self.local.enabled:
            self._start_backplane()
        _live.add(self)
        _REQUESTS.bind()  # the observable counters follow a meter provider installed since the last cache
        _EARLY.bind()

    # ------------------------------------------------------------------ lifecycle

    def _new_state(self) -> None:
        """Per-process state. After ``fork`` the child gets a fresh copy (the parent's threads, sockets and locks
        are not its own); its backplane listener starts lazily on its first L1 fill."""
        self.runner = Runner(self.client, timeout_s=self.redis_timeout_s)
        self.local = LocalCache(self._max_local, round(self.local_ttl_s * 1000))
        self._flights: dict[str, _Flight] = {}
        self._reads: dict[tuple[str, int], _Read] = {}  # L2 reads under way (_shared_read)
        self._flights_lock = threading.Lock()
        self._next_draw: dict[str, int] = {}
        self._wakeups: dict[str, threading.Event] = {}
        self._pid = os.getpid()
        self.backplane: Backplane | None = None

    def _start_backplane(self) -> None:
        with self._flights_lock:
            if self.backplane is not None or self.closed:
                return
            self.backplane = Backplane(
                self.client,
                self.channel,
                self.instance_id,
                self._on_backplane_key,
                self.local.clear,
                name=f"distkit-cache-{self.namespace}",
            )
        self.backplane.wait_connected(2.0)  # degraded (L1 bounded by local_ttl_s) if Redis is slow to answer

    def _on_backplane_key(self, key: str) -> None:
        self.local.pop(key)
        wake = self._wakeups.get(key)
        if wake is not None:  # a caller here is waiting for another process's reload of this key
            wake.set()

    def _after_fork(self) -> None:
        self.instance_id = uuid.uuid4().hex[:12]
        self.stats = Stats()
        self._new_state()

    def __del__(self) -> None:
        # what this cache counted stays in distkit.cache.requests / early_refreshes (counters never go down)
        try:
            for k, n in _counts(self).items():
                _retired[k] = _retired.get(k, 0) + n
        except Exception:  # a half-built cache, or interpreter shutdown
            pass

    def close(self) -> None:
        """Stop the backplane listener and drop the L1 (idempotent)."""
        self.closed = True
        if self.backplane is not None:
            self.backplane.close()
            self.backplane = None
        self.local.clear()
        self.runner.close()

    def __enter__(self) -> HotKeyCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ keys and entries

    def _keys(self, key: str) -> tuple[str, str]:
        if not isinstance(key, str) or not key:
            raise InvalidCacheConfigError(f"cache keys are non-empty str, got {key!r}")
        return redis_key(self.namespace, key), redis_key(self.namespace, key, "reload")

    def _entry(self, value: Any, now_ms: int, delta_ms: int) -> Entry:
        is_null = value is None
        ttl_ms = jittered_ms(self.null_ttl_s if is_null else self.ttl_s, self.jitter, rand_open() % 1.0)
        expires = now_ms + ttl_ms
        return Entry(value, expires, expires + round(self.stale_for_s * 1000), delta_ms, is_null)

    def _physical_ms(self, entry: Entry, now_ms: int) -> int:
        return max(1, entry.stale_until_ms - now_ms)

    def _deadline(self) -> float:
        return time.monotonic() + self.redis_timeout_s

    def _check(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        if self.backplane is None and self._use_backplane and self.local.enabled and not self.closed:
            self._start_backplane()

    # ------------------------------------------------------------------ read path

    def get(self, key: str, loader: Loader | None = None) -> Any:
        """The value of ``key``: L1 → L2 → one reload across all processes (see the module docstring).

        Raises the loader's error when there is no stale value within ``stale_for_s``, and
        :class:`~distkit.errors.CacheLoadTimeoutError` when no value arrives within the hard timeout."""
        now = self.clock()
        hit = self.local.get(key, now)
        if hit is not None and now < hit.expires_ms:
            self.stats.l1_hits += 1
            if self.beta:
                self._maybe_refresh(key, hit, now, loader)
            return hit.value
        return self._get_slow(key, loader, hit)

    def _load_fn(self, key: str, loader: Loader | None) -> Callable[[], Any]:
        fn = loader if loader is not None else self.loader
        if fn is None:
            raise InvalidCacheConfigError(f"no loader for {key!r}: pass loader= to HotKeyCache or to get()")
        return functools.partial(fn, key)

    def _get_slow(self, key: str, loader: Loader | None, hit: Entry | None) -> Any:
        self._check()
        data_key, _ = self._keys(key)
        version = self.local.version
        entry = self._shared_read(data_key, version)
        now = self.clock()
        if entry is not None and entry.fresh(now):
            self.stats.add("l2_hits")
            self.local.put(key, entry, now, version)
            if self.beta:
                self._maybe_refresh(key, entry, now, loader)
            return entry.value
        stale = entry
        if hit is not None and (stale is None or hit.expires_ms > stale.expires_ms):
            stale = hit
        self.stats.add("misses")
        return self._reload(key, self._load_fn(key, loader), stale if stale and stale.usable(now) else None)

    def _shared_read(self, data_key: str, version: int) -> Entry | None:
        """The L2 entry, one read at a time per key in this process: threads missing the L1 together share it
        (as many threads as the client's pool has connections, 100 by default in redis-py, would else exhaust
        it). Keyed by the L1 version as well, so a get that starts after a write or an invalidation in this
        process never joins a read that began before it. A follower whose leader failed reads for itself."""
        slot = (data_key, version)
        with self._flights_lock:
            shared = self._reads.get(slot)
            if shared is None:
                shared = self._reads[slot] = _Read()
                leader = True
            else:
                leader = False
                if shared.done is None:
                    shared.done = threading.Event()
                done = shared.done
        if not leader:
            if done.wait(self.redis_timeout_s + 1.0) and shared.ok:  # the leader's read has that deadline
                return shared.entry
            return self._read(data_key)
        try:
            shared.entry = self._read(data_key)
            shared.ok = True
            return shared.entry
        finally:
            with self._flights_lock:
                if self._reads.get(slot) is shared:
                    del self._reads[slot]
                followers = shared.done
            if followers is not None:
                followers.set()

    def _read(self, data_key: str) -> Entry | None:
        try:
            raw = self.runner.command("GET", data_key, deadline=self._deadline())
        except _OUTAGES as exc:
            log.warning("distkit.cache %s: Redis unavailable for GET (%s); reloading in this process", data_key, exc)
            return None
        return None if raw is None else decode(raw, self.codec)

    def _reload(self, key: str, load: Callable[[], Any], usable: Entry | None) -> Any:
        while True:
            with self._flights_lock:
                flight = self._flights.get(key)
                if flight is not None and (flight.done.is_set() or time.monotonic() > flight.deadline):
                    del self._flights[key]  # finished without a value, or hung past the hard timeout
                    flight = None
                leader = flight is None
                if leader:
                    flight = self._flights[key] = _Flight(time.monotonic() + self.hard_timeout_s)
            assert flight is not None
            if leader:
                return self._lead(key, load, usable, flight)
            if usable is not None:
                self._served_stale(key)
                return usable.value
            self.stats.add("waits")
            if not flight.done.wait(max(0.0, flight.deadline - time.monotonic())):
                raise CacheLoadTimeoutError(f"no value for {key!r} within {self.hard_timeout_s} s (hard timeout)")
            if flight.entry is not None:
                return flight.entry.value
            if flight.error is not None:
                raise flight.error
            # the leader saw another process load it but got no value: try again (loop takes a new flight)

    def _served_stale(self, key: str) -> None:
        self.stats.add("stale")
        _count("stale", self.namespace)

    def _try_lock(self, lock_key: str, token: str) -> bool | None:
        """True: we reload; False: another process does; None: Redis is unavailable (reload here, unguarded)."""
        try:
            return bool(self.runner(_ACQUIRE, [lock_key], [token, self._lease_ms], deadline=self._deadline()))
        except _OUTAGES as exc:
            log.warning("distkit.cache %s: Redis unavailable for the reload lock (%s); loading in this process only",
                        lock_key, exc)
            return None

    def _lead(self, key: str, load: Callable[[], Any], usable: Entry | None, flight: _Flight) -> Any:
        _, lock_key = self._keys(key)
        token = uuid.uuid4().hex
        got = self._try_lock(lock_key, token)
        if got is False:
            if usable is not None:
                self._finish_flight(key, flight)
                self._served_stale(key)
                return usable.value
            return self._await_other(key, load, flight, token)
        self._start_load(key, load, flight, token if got else None, usable)
        return self._await_own(key, usable, flight)

    def _await_other(self, key: str, load: Callable[[], Any], flight: _Flight, token: str) -> Any:
        """Another process holds the reload lock and we have nothing to serve: watch L2 for its result, taking the
        lock ourselves if the holder dies; bounded by the hard timeout. The holder's backplane message wakes us at
        once; without it (no backplane, message lost) we re-read every 5 → 50 ms."""
        data_key, lock_key = self._keys(key)
        self.stats.add("waits")
        deadline = time.monotonic() + self.hard_timeout_s
        delay = 0.005
        wake = self._wakeups.setdefault(key, threading.Event())
        try:
            return self._watch(key, load, flight, token, data_key, lock_key, deadline, delay, wake)
        finally:
            if self._wakeups.get(key) is wake:
                del self._wakeups[key]

    def _watch(self, key: str, load: Callable[[], Any], flight: _Flight, token: str, data_key: str, lock_key: str,
               deadline: float, delay: float, wake: threading.Event) -> Any:
        while time.monotonic() < deadline:
            wake.wait(min(delay, max(0.0, deadline - time.monotonic())))
            wake.clear()
            delay = min(delay * 2, 0.05)
            version = self.local.version
            entry = self._read(data_key)
            now = self.clock()
            if entry is not None and entry.fresh(now):
                self.local.put(key, entry, now, version)
                self._finish_flight(key, flight, entry)
                return entry.value
            if self._try_lock(lock_key, token) is not False:
                self._start_load(key, load, flight, token, None)
                return self._await_own(key, None, flight)
        self._finish_flight(key, flight)
        raise CacheLoadTimeoutError(
            f"no value for {key!r} within {self.hard_timeout_s} s: another process holds the reload lock"
        )

    def _finish_flight(self, key: str, flight: _Flight, entry: Entry | None = None,
                       error: BaseException | None = None) -> None:
        flight.finish(entry, error)
        with self._flights_lock:
            if self._flights.get(key) is flight:
                del self._flights[key]

    def _await_own(self, key: str, usable: Entry | None, flight: _Flight) -> Any:
        wait = self.soft_timeout_s if usable is not None else self.hard_timeout_s
        if not flight.done.wait(wait):
            if usable is not None:
                flight.detached = True
                self.stats.add("soft_timeouts")
                log.info("distkit.cache %s: load passed the soft timeout (%.3f s); serving stale, load continues",
                         key, wait)
                return usable.value
            flight.abandoned = True
            self.stats.add("abandoned")
            self._finish_flight(key, flight, error=CacheLoadTimeoutError(f"load of {key!r} abandoned"))
            raise CacheLoadTimeoutError(
                f"loader for {key!r} did not finish within the hard timeout ({self.hard_timeout_s} s) and there is "
                "no stale value; raise load_timeout_s[1] or speed up the loader"
            )
        if flight.entry is not None:
            return flight.entry.value
        error = flight.error
        assert error is not None
        if usable is not None and usable.usable(self.clock()):
            return self._fail_safe(key, usable, error)
        raise error

    def _fail_safe(self, key: str, usable: Entry, error: BaseException) -> Any:
        self.stats.add("fail_safe")
        _count("fail_safe", self.namespace)
        now = self.clock()
        log.warning("distkit.cache %s: reload failed (%r); serving the stale value (fail-safe, %.1f s left)",
                    key, error, (usable.stale_until_ms - now) / 1000)
        throttle_ms = round(self.fail_safe_throttle_s * 1000)
        if throttle_ms:  # reuse the stale value here for a moment instead of retrying the failing loader per call
            until = min(now + throttle_ms, usable.stale_until_ms)
            self.local.put(key, Entry(usable.value, until, usable.stale_until_ms, usable.delta_ms, usable.is_null),
                           now)
        return usable.value

    # ------------------------------------------------------------------ loading

    def _start_load(self, key: str, load: Callable[[], Any], flight: _Flight, token: str | None,
                    seen: Entry | None) -> None:
        threading.Thread(
            target=self._run_load, args=(key, load, flight, token, seen), name=f"distkit-cache-load-{self.namespace}",
            daemon=True,
        ).start()

    @contextmanager
    def _read_locked(self, key: str) -> Iterator[None]:
        if self.locks is None:
            yield
            return
        lock = self.locks.rw_lock(f"cache:{key}").read_lock()
        if not lock.acquire(timeout=self.hard_timeout_s):
            raise CacheLoadTimeoutError(f"read lock of {key!r} not granted within {self.hard_timeout_s} s")
        try:
            yield
        finally:
            lock.release()

    def _run_load(self, key: str, load: Callable[[], Any], flight: _Flight, token: str | None,
                  seen: Entry | None) -> None:
        data_key, lock_key = self._keys(key)
        entry: Entry | None = None
        try:
            version = self.local.version
            if token is not None:  # double-checked: a reload that finished just before we took the lock counts
                current = self._read(data_key)
                now = self.clock()
                newer = current is not None and (seen is None or current.expires_ms > seen.expires_ms)
                if current is not None and newer and current.fresh(now):
                    self._release(lock_key, token)
                    self.local.put(key, current, now, version)
                    self._finish_flight(key, flight, current)
                    return
            self.stats.add("loads")
            _count("loads", self.namespace)
            t0 = time.monotonic()
            with self._read_locked(key):
                value = load()
                elapsed = time.monotonic() - t0
                if flight.abandoned or elapsed > self.hard_timeout_s:
                    raise CacheLoadTimeoutError(f"load of {key!r} took {elapsed:.3f} s > hard timeout; discarded")
                now = self.clock()
                entry = self._entry(value, now, round(elapsed * 1000))
                version = self.local.version  # an invalidation after our write must win over our L1 fill
                written = self._write_loaded(key, data_key, lock_key, token, entry, now)
            if written:
                self.local.put(key, entry, self.clock(), version)
            self._finish_flight(key, flight, entry)
        except BaseException as exc:
            if isinstance(exc, CacheLoadTimeoutError):
                self.stats.add("abandoned")
            if token is not None:
                self._release(lock_key, token)
            self._finish_flight(key, flight, error=exc)
            if flight.detached and not flight.abandoned and isinstance(exc, Exception):
                self.stats.add("fail_safe")  # the caller already got the stale value at the soft timeout
                _count("fail_safe", self.namespace)
                log.warning("distkit.cache %s: background reload failed (%r); the stale value stays", key, exc)
            elif flight.abandoned or not isinstance(exc, Exception):
                log.warning("distkit.cache %s: background load ended with %r", key, exc)

    def _write_loaded(self, key: str, data_key: str, lock_key: str, token: str | None, entry: Entry,
                      now: int) -> bool:
        payload = encode(entry, self.codec)
        try:
            if token is None:  # Redis was down when we took the "lock": keep it in this process only
                return True
            return bool(self.runner(
                _LOAD_WRITE, [data_key, lock_key],
                [token, payload, self._physical_ms(entry, now), self.channel, self._message(key)],
                deadline=self._deadline(),
            ))
        except _OUTAGES as exc:
            log.warning("distkit.cache %s: Redis unavailable to store the loaded value (%s); L1 only", key, exc)
            return True

    def _release(self, lock_key: str, token: str) -> None:
        try:
            self.runner(_RELEASE, [lock_key], [token], deadline=self._deadline())
        except _OUTAGES:
            pass  # the lease expires on its own (hard timeout + 1 s)

    def _message(self, key: str) -> str:
        return f"{self.instance_id}|{key}"

    def _maybe_refresh(self, key: str, entry: Entry, now: int, loader: Loader | None) -> None:
        # a reload costs a few round trips on top of the loader (lock, double-check, write, backplane): XFetch's
        # delta is never taken below 10 ms, so fast loaders (and values written by set(), delta 0) refresh in time
        delta = max(entry.delta_ms, _MIN_DELTA_MS)
        if entry.expires_ms - now > 30 * self.beta * delta:
            return  # XFetch's chance is below e**-30 this far from the expiry: skip the log and the random draw
        # XFetch's trigger point moves earlier with the read rate r (about beta * delta * ln(r * delta) before the
        # expiry); an L1 serves ~10**5 reads/s, which would reload every key far too early. So each process draws
        # at most 20 times per load duration: the refresh lands ~beta * delta * ln(20 * processes) early.
        next_draw = self._next_draw.get(key)
        if next_draw is not None and now < next_draw:
            return
        if len(self._next_draw) >= 4096:
            self._next_draw.clear()
        self._next_draw[key] = now + max(1, delta // 20)
        if not xfetch(now, entry, self.beta, rand_open(), _MIN_DELTA_MS) or self._busy(key):
            return
        if loader is None and self.loader is None:
            return
        with self._flights_lock:
            if self._busy(key):
                return
            flight = self._flights[key] = _Flight(time.monotonic() + self.hard_timeout_s)
            flight.detached = True  # nobody waits for it: a failure is reported by the load thread
        self.stats.add("early_refreshes")
        threading.Thread(
            target=self._refresh, args=(key, self._load_fn(key, loader), flight, entry),
            name=f"distkit-cache-refresh-{self.namespace}", daemon=True,
        ).start()

    def _busy(self, key: str) -> bool:
        """A reload of ``key`` is running here, or one just found another process reloading (20 ms back-off)."""
        flight = self._flights.get(key)
        return flight is not None and not (flight.done.is_set() and time.monotonic() > flight.deadline)

    def _refresh(self, key: str, load: Callable[[], Any], flight: _Flight, entry: Entry) -> None:
        """Background XFetch reload: only if nobody else (any process) is reloading; callers keep the current value."""
        _, lock_key = self._keys(key)
        token = uuid.uuid4().hex
        if self._try_lock(lock_key, token) is not True:
            flight.deadline = time.monotonic() + 0.02  # somebody else refreshes: don't ask again for 20 ms
            flight.done.set()
            return
        self._run_load(key, load, flight, token, entry)

    # ------------------------------------------------------------------ write path

    @contextmanager
    def _outage(self, what: str, key: str) -> Iterator[None]:
        try:
            yield
        except BackendUnavailableError:
            raise
        except _OUTAGES as exc:
            raise BackendUnavailableError(
                f"distkit.cache {what} of {key!r}: Redis unavailable ({type(exc).__name__}); the write did not "
                "happen everywhere, retry it (other processes keep their L1 copies for at most local_ttl_s)"
            ) from exc

    @contextmanager
    def write_lock(self, key: str) -> Iterator[None]:
        """Hold ``key``'s write lock (``locks.rw_lock("cache:<key>")``) around a source-of-truth update and the
        cache write: no reload can read the source while it is half written. A no-op without ``locks=``."""
        if self.locks is None:
            yield
            return
        lock = self.locks.rw_lock(f"cache:{key}").write_lock()
        with lock:
            yield

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON via the codec; ``None`` stores a null marker) in L2 and this L1, cancel any reload
        in flight and tell every process's L1 to drop ``key``. Holds the write lock when ``locks=`` is given."""
        self._check()
        data_key, lock_key = self._keys(key)
        now = self.clock()
        entry = self._entry(value, now, 0)
        payload = encode(entry, self.codec)
        with self.write_lock(key), self._outage("set", key):
            self.runner(_SET, [data_key, lock_key],
                        [payload, self._physical_ms(entry, now), self.channel, self._message(key)],
                        deadline=self._deadline())
            self.local.put(key, entry, now, bump=True)

    def invalidate(self, key: str) -> None:
        """Delete ``key`` from L2 and every process's L1 (the next ``get`` reloads). Holds the write lock."""
        self._check()
        data_key, lock_key = self._keys(key)
        with self.write_lock(key), self._outage("invalidate", key):
            self.local.pop(key)
            self.runner(_INVALIDATE, [data_key, lock_key], [self.channel, self._message(key)],
                        deadline=self._deadline())
            self.local.pop(key)

    # ------------------------------------------------------------------ asyncio shells

    async def aget(self, key: str, loader: Loader | None = None) -> Any:
        """``get`` for asyncio code: an L1 hit answers inline; anything else runs ``get`` on a worker thread."""
        now = self.clock()
        hit = self.local.get(key, now)
        if hit is not None and now < hit.expires_ms:
            self.stats.l1_hits += 1
            if self.beta:
                self._maybe_refresh(key, hit, now, loader)
            return hit.value
        return await asyncio.to_thread(self._get_slow, key, loader, hit)

    async def aset(self, key: str, value: Any) -> None:
        await asyncio.to_thread(self.set, key, value)

    async def ainvalidate(self, key: str) -> None:
        await asyncio.to_thread(self.invalidate, key)

    # ------------------------------------------------------------------ decorator

    def cached(self, *, key: Callable[..., str]) -> Callable[[F], F]:
        """Decorate a loader: ``@cache.cached(key=lambda sku: f"sku:{sku}")``. Works on sync and async functions;
        the function is called (with the caller's arguments) only when the cache reloads that key."""

        def decorate(fn: F) -> F:
            if inspect.iscoroutinefunction(fn):
                afn = cast(Callable[..., Coroutine[Any, Any, Any]], fn)

                @functools.wraps(fn)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    loop = asyncio.get_running_loop()

                    def load(_key: str) -> Any:  # runs on the load thread; the coroutine runs on the caller's loop
                        future = asyncio.run_coroutine_threadsafe(afn(*args, **kwargs), loop)
                        try:
                            return future.result(timeout=self.hard_timeout_s)
                        except concurrent.futures.TimeoutError:
                            future.cancel()  # past the hard timeout: the result would be discarded anyway
                            raise CacheLoadTimeoutError(
                                f"async loader for {_key!r} passed the hard timeout ({self.hard_timeout_s} s)"
                            ) from None

                    return await self.aget(key(*args, **kwargs), load)

                return cast(F, async_wrapper)

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return self.get(key(*args, **kwargs), lambda _key: fn(*args, **kwargs))

            return cast(F, wrapper)

        return decorate


def _after_fork_in_child() -> None:
    for cache in list(_live):
        if not cache.closed:
            cache._after_fork()


def _close_all_at_exit() -> None:
    caches = list(_live)
    for cache in caches:  # signal every listener first so their (≤ 0.25 s) exits overlap
        if cache.backplane is not None:
            cache.backplane.stop()
    for cache in caches:
        try:
            cache.close()
        except Exception:  # interpreter shutdown: best effort
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)
