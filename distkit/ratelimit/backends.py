"""Where limiter state lives: this process (``MemoryBackend``) or Redis (``RedisBackend`` /
``AsyncRedisBackend``: one Lua script per decision, one round trip, time from Redis ``TIME``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from distkit.clock import Clock
from distkit.ratelimit.algorithms import Params, Raw

if TYPE_CHECKING:  # redis-py loads with the first Redis backend: MemoryBackend works without the redis extra
    from distkit._redis import Script

StepFn = Callable[[Any, int, int, Params], tuple[Any, Raw]]

_SCRIPTS: dict[str, Script] = {}
BATCH = 100  # keys per script call in acquire_many: ~0.3 ms of Redis time, short enough not to stall others


def script_for(name: str) -> Script:
    if name not in _SCRIPTS:
        from distkit._redis import Script

        _SCRIPTS[name] = Script("ratelimit", name)
    return _SCRIPTS[name]


def _flatten(replies: list[Any]) -> list[Raw]:
    """Script replies of a batch (a string for one key, a list for several) as one list of decisions."""
    out: list[Raw] = []
    for r in replies:
        if isinstance(r, Exception):
            raise r
        if isinstance(r, list):
            out.extend(parse_raw(x) for x in r)
        else:
            out.append(parse_raw(r))
    return out


def parse_raw(reply: bytes) -> Raw:
    """The scripts answer five integers in one string (times in µs, rounded up): one bulk reply to parse."""
    a, b, c, d, e = reply.split()
    return (int(a), int(b), float(c), float(d), float(e))


class MemoryBackend:
    """Per-process state, thread-safe. ``clock`` (unix ms) is for tests; default: the system clock."""

    is_async = False
    is_remote = False

    def __init__(self, clock: Clock | None = None, *, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._state: dict[str, tuple[float, Any]] = {}  # key -> (expires_at_us, state)
        self._lock = threading.Lock()
        self._max_keys = max_keys

    def now_us(self) -> int:
        return self._clock() * 1000 if self._clock is not None else time.time_ns() // 1000

    def decide(self, algo: str, step: StepFn, name: str, cost: int, params: Params) -> Raw:
        k = f"{algo}:{name}"
        with self._lock:
            now = self.now_us()
            entry = self._state.get(k)
            state = entry[1] if entry is not None and entry[0] > now else None
            new_state, raw = step(state, now, cost, params)
            if new_state is not None:
                if len(self._state) >= self._max_keys:
                    self._evict(now)
                self._state[k] = (now + params.ttl_us, new_state)
            return raw

    def decide_many(self, algo: str, step: StepFn, calls: Sequence[tuple[str, int]], params: Params) -> list[Raw]:
        return [self.decide(algo, step, name, cost, params) for name, cost in calls]

    def _evict(self, now: int) -> None:
        for k in [k for k, (exp, _) in self._state.items() if exp <= now]:
            del self._state[k]
        while len(self._state) >= self._max_keys:  # still full: drop the oldest insertions
            del self._state[next(iter(self._state))]


class RedisBackend:
    """Redis (plain or Cluster). Keys are ``{prefix:<limiter name>:<key>}`` (window counters add ``:<window>``
    inside the same hash slot) and always carry a PTTL.

    ``clock`` makes the *client* supply the time instead of Redis ``TIME``: for deterministic tests only
    (in production, client clocks skew; Redis time does not).

    ``direct=True`` (default) sends decisions over the client's connection settings on a few private
    connections, skipping redis-py's per-command overhead (see :mod:`distkit._redis.direct`: a dead idle
    connection is replaced and the call resent once; then errors go to the limiter's failure policy).
    ``direct=False`` uses the client exactly as given (its retry policy, instrumentation, pool limits);
    Cluster clients and test doubles always do."""

    is_async = False
    is_remote = True

    def __init__(
        self, redis_client: Any, prefix: str = "rl", *, clock: Clock | None = None, direct: bool = True
    ) -> None:
        self.redis = redis_client
        self.prefix = prefix
        self._clock = clock
        from distkit._redis import AsyncRunner, Runner, key

        self._run: Any = (AsyncRunner if self.is_async else Runner)(redis_client, direct=direct)
        key(prefix, "x")  # validates the prefix once

    def key(self, algo: str, name: str) -> str:
        # name = "<limiter name>:<user key>" (unique per limiter); same shape as distkit._redis.key, inlined
        return f"{{{self.prefix}:{name}}}"

    def _now(self) -> str | int:
        return self._clock() * 1000 if self._clock is not None else ""

    def _args(self, cost: int, params: Params) -> list[bytes | int | str]:
        return [self._now(), *params.args, cost]

    def _batches(
        self, algo: str, calls: Sequence[tuple[str, int]], params: Params
    ) -> list[tuple[list[str], list[Any]]]:
        """``acquire_many`` as script calls of up to BATCH keys each (one script decides them all, at one ``now``),
        sent together in one pipelined round trip. On Redis Cluster keys live in different slots: one per call."""
        from distkit._redis import is_cluster

        size = 1 if is_cluster(self.redis) else BATCH
        out = []
        for i in range(0, len(calls), size):
            chunk = calls[i : i + size]
            out.append(([self.key(algo, n) for n, _ in chunk], [self._now(), *params.args, *(c for _, c in chunk)]))
        return out

    def decide(self, algo: str, step: StepFn, name: str, cost: int, params: Params) -> Raw:
        return parse_raw(self._run(script_for(algo), [self.key(algo, name)], self._args(cost, params)))

    def decide_many(self, algo: str, step: StepFn, calls: Sequence[tuple[str, int]], params: Params) -> list[Raw]:
        return _flatten(self._run.many(script_for(algo), self._batches(algo, calls, params)))

    def close(self) -> None:
        """Close the direct lane's private connections (the client and its pool stay yours to close)."""
        if self._run.lane is not None:
            self._run.lane.close()

    def get_config(self, name: str) -> bytes | None:
        from distkit._redis import key

        return self.redis.get(key(self.prefix, f"__rate__:{name}"))  # type: ignore[no-any-return]

    def set_config(self, name: str, value: str, ttl_s: int) -> None:
        from distkit._redis import key

        self.redis.set(key(self.prefix, f"__rate__:{name}"), value, ex=ttl_s)


class AsyncRedisBackend(RedisBackend):
    """``RedisBackend`` over an asyncio client (``redis.asyncio``): limiter methods become awaitables."""

    is_async = True

    async def adecide(self, algo: str, step: StepFn, name: str, cost: int, params: Params) -> Raw:
        return parse_raw(await self._run(script_for(algo), [self.key(algo, name)], self._args(cost, params)))

    async def adecide_many(
        self, algo: str, step: StepFn, calls: Sequence[tuple[str, int]], params: Params
    ) -> list[Raw]:
        return _flatten(await self._run.many(script_for(algo), self._batches(algo, calls, params)))

    def close(self) -> None:
        raise TypeError("AsyncRedisBackend holds asyncio connections: use `await backend.aclose()`")

    async def aclose(self) -> None:
        """Async twin of :meth:`RedisBackend.close`."""
        if self._run.lane is not None:
            await self._run.lane.aclose()

    async def aget_config(self, name: str) -> bytes | None:
        from distkit._redis import key

        return await self.redis.get(key(self.prefix, f"__rate__:{name}"))  # type: ignore[no-any-return]

    async def aset_config(self, name: str, value: str, ttl_s: int) -> None:
        from distkit._redis import key

        await self.redis.set(key(self.prefix, f"__rate__:{name}"), value, ex=ttl_s)
