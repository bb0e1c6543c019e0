"""Where limiter state lives: this process (``MemoryBackend``) or Redis (``RedisBackend`` /
``AsyncRedisBackend``: one Lua script per decision, one round trip, time from Redis ``TIME``)."""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from distkit.clock import Clock
from distkit.ratelimit.algorithms import Params, Raw

if TYPE_CHECKING:
    from distkit._types import AsyncRedisLike, RedisLike, SyncRedisLike

if TYPE_CHECKING:  # redis-py loads with the first Redis backend: MemoryBackend works without the redis extra
    from distkit._redis import Script
    from distkit.ratelimit.limiter import Limiter

StepFn = Callable[[Any, int, int, Params], tuple[Any, Raw]]
Outcome = Raw | BaseException  # one key's answer in a batch: a decision, or that key's own error

log = logging.getLogger(__name__)
_SCRIPTS: dict[str, Script] = {}
BATCH = 100  # keys per script call in acquire_many: ~0.3 ms of Redis time, short enough not to stall others
DEFAULT_TIMEOUT_S = 1.0  # deadline of one decision (or one batch) on Redis, documented in docs/ratelimit.md
CONFIG_REFRESH_S = 1.0


def script_for(name: str) -> Script:
    if name not in _SCRIPTS:
        from distkit._redis import Script

        _SCRIPTS[name] = Script("ratelimit", name)
    return _SCRIPTS[name]


def parse_raw(reply: bytes) -> Raw:
    """The scripts answer five integers in one string (times in µs, rounded up): one bulk reply to parse."""
    a, b, c, d, e = reply.split()
    return (int(a), int(b), int(c), int(d), int(e))


def _outcomes(replies: list[Any], sizes: list[int]) -> list[Outcome]:
    """Script replies of a batch as one outcome per key. A script call of several keys answers one line per key
    (``_batch.lua``); a key whose decision raised (``WRONGTYPE``…) answers ``E <message>`` and fails alone. A
    script call that failed as a whole (its reply is an error) fails each of its keys."""
    out: list[Outcome] = []
    for reply, size in zip(replies, sizes, strict=True):
        if isinstance(reply, BaseException):
            out.extend([reply] * size)
        elif b"E" not in reply:  # the common case: 5 integers per key, parsed in one pass
            ints = list(map(int, reply.split()))
            out.extend(zip(*[iter(ints)] * 5, strict=True))
        else:
            import redis

            for line in reply.split(b"\n"):
                if line[:2] == b"E ":
                    out.append(redis.ResponseError(line[2:].decode("utf-8", "replace")))
                else:
                    out.append(parse_raw(line))
    return out


class MemoryBackend:
    """Per-process state, thread-safe. ``clock`` (unix ms) is for tests; default: the system clock.

    At most ``max_keys`` keys. Each key remembers when its state stops mattering (the algorithm's
    ``reset_after``: a full bucket, an ended window, an empty log); when a new key needs room, the key that
    stopped mattering first goes (an idle key is always evicted before one that still restricts). Finding it is
    a heap pop; a decision on an existing key touches no heap unless its expiry moved earlier, so a decision is
    O(1) and a new key O(log n). Only when every key still restricts is the one closest to idle dropped (logged
    once): size ``max_keys`` above your peak of concurrently limited keys."""

    is_async = False
    is_remote = False

    def __init__(self, clock: Clock | None = None, *, max_keys: int = 100_000) -> None:
        from distkit.errors import InvalidRateError

        if not isinstance(max_keys, int) or isinstance(max_keys, bool) or max_keys < 1:
            raise InvalidRateError(f"max_keys must be an int >= 1, got {max_keys!r}")
        self._clock = clock
        # key -> [expires_at_us, state, queued_at_us]: queued_at is the expiry this key has in the heap
        self._state: dict[str, list[Any]] = {}
        self._heap: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._max_keys = max_keys
        self.evicted_restricting = 0  # keys dropped while their state still restricted them (should stay 0)

    def now_us(self) -> int:
        return self._clock() * 1000 if self._clock is not None else time.time_ns() // 1000

    def __len__(self) -> int:
        return len(self._state)

    def decide(self, algo: str, step: StepFn, name: str, cost: int, params: Params) -> Raw:
        return self.decide_key(algo + ":" + name, step, cost, params)

    def decide_key(self, k: str, step: StepFn, cost: int, params: Params) -> Raw:
        """:meth:`decide` for a key already scoped as ``<algorithm>:<limiter name>:<key>`` (the hot path)."""
        with self._lock:
            now = self._clock() * 1000 if self._clock is not None else time.time_ns() // 1000
            entry = self._state.get(k)
            state = entry[1] if entry is not None and entry[0] > now else None
            new_state, raw = step(state, now, cost, params)
            if new_state is not None:
                exp = now + raw[3]
                if entry is None:
                    if len(self._state) >= self._max_keys:
                        self._evict(now)
                    self._state[k] = [exp, new_state, exp]
                    heapq.heappush(self._heap, (exp, k))
                    if len(self._heap) > 2 * len(self._state) + 1024:
                        self._compact()
                else:
                    entry[0] = exp
                    entry[1] = new_state
                    if exp < entry[2]:
                        entry[2] = exp
                        heapq.heappush(self._heap, (exp, k))
            return raw

    def decide_many(self, algo: str, step: StepFn, calls: Sequence[tuple[str, int]], params: Params) -> list[Outcome]:
        return [self.decide(algo, step, name, cost, params) for name, cost in calls]

    def _evict(self, now: int) -> None:
        heap, state = self._heap, self._state
        while heap:
            exp, k = heap[0]
            entry = state.get(k)
            if entry is None or entry[2] != exp:  # a stale heap entry
                heapq.heappop(heap)
                continue
            if entry[0] > exp:  # used since it was queued: queue it again at its current expiry
                entry[2] = entry[0]
                heapq.heapreplace(heap, (entry[0], k))
                continue
            heapq.heappop(heap)
            del state[k]
            if exp > now:
                self.evicted_restricting += 1
                if self.evicted_restricting == 1:
                    log.warning(
                        "rate-limit MemoryBackend is full (max_keys=%d) of keys that all still restrict: "
                        "dropping the one closest to idle; raise max_keys",
                        self._max_keys,
                    )
            return

    def _compact(self) -> None:
        self._heap = [(e[0], k) for k, e in self._state.items()]
        for e in self._state.values():
            e[2] = e[0]
        heapq.heapify(self._heap)


class _RedisBase:
    """What the sync and async Redis backends share: keys, arguments, batching, the config watch list."""

    is_remote = True

    def __init__(
        self,
        redis_client: RedisLike,
        prefix: str = "rl",
        *,
        clock: Clock | None = None,
        direct: bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        from distkit.errors import InvalidRateError

        if not isinstance(timeout_s, int | float) or isinstance(timeout_s, bool) or not 0 < timeout_s <= 60:
            raise InvalidRateError(f"timeout_s must be a number of seconds in (0, 60], got {timeout_s!r}")
        self.redis = redis_client
        self.prefix = prefix
        self.timeout_s = float(timeout_s)
        self._clock = clock
        self._run: Any = self._make_runner(redis_client, direct)
        from distkit._redis import is_cluster, key  # redis-py loads with the first Redis backend

        self._cluster = is_cluster(redis_client)
        self._watched: weakref.WeakSet[Limiter[Any]] = weakref.WeakSet()
        key(prefix, "x")  # validates the prefix once

    def _make_runner(self, client: Any, direct: bool) -> Any:
        raise NotImplementedError

    def key(self, algo: str, name: str) -> str:
        # name = "<limiter name>:<user key>" (unique per limiter); same shape as distkit._redis.key, inlined
        return f"{{{self.prefix}:{name}}}"

    def config_key(self, name: str) -> str:
        from distkit._redis import key

        return key(self.prefix, f"__rate__:{name}")

    def _now(self) -> str | int:
        return self._clock() * 1000 if self._clock is not None else ""

    def _args(self, cost: int, params: Params) -> list[bytes | int | str]:
        return [self._now(), *params.args, cost]

    def _batches(
        self, algo: str, calls: Sequence[tuple[str, int]], params: Params
    ) -> tuple[list[tuple[list[str], list[Any]]], list[int]]:
        """``acquire_many`` as script calls of up to BATCH keys each (one script decides them all, at one ``now``),
        sent together in one pipelined round trip. On Redis Cluster keys live in different slots: one per call."""
        size = 1 if self._cluster else BATCH
        out, sizes = [], []
        head, now, packed = "{" + self.prefix + ":", self._now(), params.args
        for i in range(0, len(calls), size):
            chunk = calls[i : i + size]
            out.append(([head + n + "}" for n, _ in chunk], [now, *packed, *[c for _, c in chunk]]))
            sizes.append(len(chunk))
        return out, sizes

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout_s

    def watch(self, limiter: Limiter[Any]) -> None:
        """Keep ``limiter``'s rate in step with the one stored by ``set_rate`` (checked every second in the
        background, never on a decision path)."""
        self._watched.add(limiter)


class RedisBackend(_RedisBase):
    """Redis (plain or Cluster). Keys are ``{prefix:<limiter name>:<key>}`` (window counters add ``:<window>``
    inside the same hash slot) and always carry a PTTL.

    Every decision has a deadline of ``timeout_s`` (default 1 s) passed to :class:`distkit._redis.Runner`;
    an outage (connection refused or reset, a timeout, the Runner's outage breaker) goes to the limiter's
    failure policy; any other error reply raises :class:`~distkit.errors.RateLimitBackendError`.

    ``clock`` makes the *client* supply the time instead of Redis ``TIME``: for deterministic tests only
    (in production, client clocks skew; Redis time does not). ``direct`` selects the Runner's fast lane
    (see :mod:`distkit._redis.direct`); ``direct=False`` uses the client exactly as given."""

    is_async = False

    def __init__(
        self,
        redis_client: SyncRedisLike,
        prefix: str = "rl",
        *,
        clock: Clock | None = None,
        direct: bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(redis_client, prefix, clock=clock, direct=direct, timeout_s=timeout_s)
        self._watcher: threading.Thread | None = None
        self._watcher_pid = 0
        self._stop = threading.Event()

    def _make_runner(self, client: Any, direct: bool) -> Any:
        from distkit._redis import Runner

        return Runner(client, direct=direct, timeout_s=self.timeout_s)

    def decide(self, algo: str, step: StepFn, name: str, cost: int, params: Params) -> Raw:
        return parse_raw(
            self._run(
                script_for(algo),
                [self.key(algo, name)],
                [self._now(), *params.args, cost],
                deadline=time.monotonic() + self.timeout_s,
            )
        )

    def decider(self, algo: str) -> Callable[[str, StepFn, int, Params], Raw]:
        """The hot path's ``decide`` for one algorithm, taking a key scoped as ``<limiter name>:<key>``."""
        script, prefix, timeout_s = script_for(algo), "{" + self.prefix + ":", self.timeout_s

        def decide(name: str, step: StepFn, cost: int, params: Params) -> Raw:
            now = self._clock() * 1000 if self._clock is not None else ""
            deadline = time.monotonic() + timeout_s
            return parse_raw(self._run(script, [prefix + name + "}"], [now, *params.args, cost], deadline=deadline))

        return decide

    def decide_many(self, algo: str, step: StepFn, calls: Sequence[tuple[str, int]], params: Params) -> list[Outcome]:
        import redis

        deadline = self._deadline()
        script = script_for(algo)
        batches, sizes = self._batches(algo, calls, params)
        if self._cluster:  # one call per key: a failing key must not stop the others
            replies: list[Any] = []
            for keys, args in batches:
                try:
                    replies.append(self._run(script, keys, args, deadline=deadline))
                except redis.ResponseError as exc:
                    replies.append(exc)
            return _outcomes(replies, sizes)
        return _outcomes(self._run.many(script, batches, deadline=deadline), sizes)

    def get_config(self, name: str) -> bytes | None:
        return self._run.command("GET", self.config_key(name), deadline=self._deadline())  # type: ignore[no-any-return]

    def set_config(self, name: str, value: str, ttl_s: int) -> None:
        self._run.command("SET", self.config_key(name), value, "EX", ttl_s, deadline=self._deadline())

    def watch(self, limiter: Limiter[Any]) -> None:
        super().watch(limiter)
        if self._watcher is None or self._watcher_pid != os.getpid() or not self._watcher.is_alive():
            self._stop = threading.Event()
            self._watcher_pid = os.getpid()
            self._watcher = threading.Thread(
                target=_watch_loop,
                args=(weakref.ref(self), self._stop),
                name=f"distkit-ratelimit-config-{self.prefix}",
                daemon=True,
            )
            self._watcher.start()

    def close(self) -> None:
        """Stop the config watcher and close the Runner's connections (the client stays yours to close)."""
        self._stop.set()
        self._run.close()


class AsyncRedisBackend(_RedisBase):
    """The asyncio twin of :class:`RedisBackend` (``redis.asyncio`` clients): limiter methods become awaitables."""

    is_async = True

    def __init__(
        self,
        redis_client: AsyncRedisLike,
        prefix: str = "rl",
        *,
        clock: Clock | None = None,
        direct: bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(redis_client, prefix, clock=clock, direct=direct, timeout_s=timeout_s)
        self._watcher: asyncio.Task[None] | None = None

    def _make_runner(self, client: Any, direct: bool) -> Any:
        from distkit._redis import AsyncRunner

        return AsyncRunner(client, direct=direct, timeout_s=self.timeout_s)

    async def adecide(self, algo: str, step: StepFn, name: str, cost: int, params: Params) -> Raw:
        return parse_raw(
            await self._run(
                script_for(algo),
                [self.key(algo, name)],
                [self._now(), *params.args, cost],
                deadline=time.monotonic() + self.timeout_s,
            )
        )

    async def adecide_many(
        self, algo: str, step: StepFn, calls: Sequence[tuple[str, int]], params: Params
    ) -> list[Outcome]:
        import redis

        deadline = self._deadline()
        script = script_for(algo)
        batches, sizes = self._batches(algo, calls, params)
        if self._cluster:
            replies: list[Any] = []
            for keys, args in batches:
                try:
                    replies.append(await self._run(script, keys, args, deadline=deadline))
                except redis.ResponseError as exc:
                    replies.append(exc)
            return _outcomes(replies, sizes)
        return _outcomes(await self._run.many(script, batches, deadline=deadline), sizes)

    def close(self) -> None:
        from distkit.errors import RateLimitUsageError

        raise RateLimitUsageError("AsyncRedisBackend holds asyncio connections: use `await backend.aclose()`")

    async def aclose(self) -> None:
        """Async twin of :meth:`RedisBackend.close`."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        await self._run.aclose()

    async def aget_config(self, name: str) -> bytes | None:
        return await self._run.command("GET", self.config_key(name), deadline=self._deadline())  # type: ignore[no-any-return]

    async def aset_config(self, name: str, value: str, ttl_s: int) -> None:
        await self._run.command("SET", self.config_key(name), value, "EX", ttl_s, deadline=self._deadline())

    def watch(self, limiter: Limiter[Any]) -> None:
        """Register ``limiter``; the watcher runs as a task of the running event loop (started by the first
        decision, re-created if that loop has gone)."""
        super().watch(limiter)
        loop = asyncio.get_running_loop()
        task = self._watcher
        if task is None or task.done() or task.get_loop() is not loop:
            self._watcher = loop.create_task(
                _awatch_loop(weakref.ref(self)), name=f"distkit-ratelimit-config-{self.prefix}"
            )



async def _awatch_loop(ref: weakref.ref[AsyncRedisBackend]) -> None:
    """The async watcher: holds its backend only weakly, so it ends with the backend (or its last limiter)."""
    while True:
        backend = ref()
        if backend is None:
            return
        limiters = list(backend._watched)
        if not limiters:
            backend._watcher = None
            return
        for limiter in limiters:
            try:
                limiter._apply_config(await backend.aget_config(limiter.name))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # outage or bad reply: keep the last known rate, try again next round
                limiter._config_failed(exc)
        del backend, limiters, limiter
        await asyncio.sleep(CONFIG_REFRESH_S)


def _watch_loop(ref: weakref.ref[RedisBackend], stop: threading.Event) -> None:
    """The sync watcher thread: every CONFIG_REFRESH_S, each watched limiter's stored rate (each GET has the
    backend's deadline). Holds its backend only weakly: it ends when the backend, or its last limiter, is gone."""
    while not stop.is_set():
        backend = ref()
        if backend is None:
            return
        limiters = list(backend._watched)
        if not limiters:
            backend._watcher = None
            return
        for limiter in limiters:
            if stop.is_set():
                return
            try:
                limiter._apply_config(backend.get_config(limiter.name))
            except Exception as exc:  # outage or bad reply: keep the last known rate, try again next round
                limiter._config_failed(exc)
        del backend, limiters, limiter
        stop.wait(CONFIG_REFRESH_S)


def encode_rate(count: int, per_s: float) -> str:
    return json.dumps({"count": count, "per_s": per_s})
