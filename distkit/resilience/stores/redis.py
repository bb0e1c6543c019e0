"""``RedisBreakerStore``: one breaker's window counters and state in one Redis hash, shared by every process.

* keys: ``{prefix:name}`` (one hash tag per breaker: Redis Cluster safe), PTTL ``2 * window + open + half-open
  max + 60 s``, refreshed by every flush;
* calls are counted in the process and flushed by the store's daemon thread every ``flush_s`` (one script per
  breaker per flush, ``lua/flush.lua``), so CLOSED calls never wait on Redis; time is Redis ``TIME``;
* HALF_OPEN probes are granted and judged by ``lua/probe.lua``: the ``half_open_calls`` budget is global;
* Redis down (or slower than ``timeout_s``): the breaker runs on its own local statistics and probe budget,
  raises nothing, and shares again on the next successful flush (counts made meanwhile stay local).

``redis`` is imported only when this store is built, so ``import distkit.resilience`` works without it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from distkit.clock import Clock
from distkit.errors import InvalidBreakerConfigError
from distkit.resilience.breaker import CODE_STATE, BreakerConfig
from distkit.resilience.stores.base import AsyncFlusher, Flusher, View

if TYPE_CHECKING:
    from distkit._types import AsyncRedisLike, SyncRedisLike


def _packed(cache: dict[BreakerConfig, str], cfg: BreakerConfig) -> str:
    """ARGV[2] of every script: the settings, packed once per config."""
    a = cache.get(cfg)
    if a is None:
        ttl = 2 * cfg.window_ms + cfg.open_ms + cfg.half_open_max_ms + 60_000
        a = cache[cfg] = (
            f"{cfg.bucket_ms} {cfg.buckets} {cfg.minimum_calls} {cfg.open_ms} {cfg.half_open_calls} "
            f"{cfg.half_open_max_ms} {cfg.failure_rate!r} {cfg.slow_call_rate!r} {ttl}"
        )
    return a


def _view(reply: list[Any]) -> View:
    st, ep, rem, forced, calls, failed, slow, granted = (int(x) for x in reply)
    return View(CODE_STATE[st], ep, rem, bool(forced), calls, failed, slow, bool(granted))


class RedisBreakerStore:
    """Share breakers' statistics through Redis (plain or Cluster, sync ``redis`` client).

    ``flush_s``: how often counts go to Redis (default 0.1 s; ``None``: no thread, call ``breaker.flush()``);
    ``timeout_s``: the deadline of every Redis call (default 0.25 s: a slow Redis must not slow the probes);
    ``clock``: make the client supply the time instead of Redis ``TIME`` (deterministic tests only)."""

    def __init__(
        self,
        redis_client: SyncRedisLike,
        prefix: str = "breaker",
        *,
        flush_s: float | None = 0.1,
        timeout_s: float = 0.25,
        clock: Clock | None = None,
        direct: bool = True,
    ) -> None:
        from distkit._redis import Runner, Script, key

        if _is_async(redis_client):
            raise InvalidBreakerConfigError(
                "RedisBreakerStore needs a sync redis client (its flusher is a thread); decorated async "
                "functions work with it as they are"
            )
        if flush_s is not None and flush_s <= 0:
            raise InvalidBreakerConfigError(f"flush_s must be > 0 or None, got {flush_s!r}")
        self.redis = redis_client
        self.prefix = prefix
        self.flush_s = flush_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._key = key
        key(prefix, "x")  # validates the prefix
        self._run = Runner(redis_client, direct=direct, timeout_s=timeout_s)
        self._flush = Script("resilience", "flush")
        self._probe = Script("resilience", "probe")
        self._control = Script("resilience", "control")
        self.flusher = Flusher(flush_s, prefix)
        self._cfg_args: dict[BreakerConfig, str] = {}

    def attach(self, breaker: Any) -> None:
        self.flusher.attach(breaker)

    def detach(self, breaker: Any) -> None:
        self.flusher.detach(breaker)

    def __enter__(self) -> RedisBreakerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the flusher and close the direct lane's connections (the client stays yours to close)."""
        self.flusher.stop()
        self._run.close()

    def _args(self, cfg: BreakerConfig) -> str:
        return _packed(self._cfg_args, cfg)

    def _call(self, script: Any, name: str, cfg: BreakerConfig, *extra: Any) -> View:
        now = self._clock() if self._clock is not None else ""
        reply = self._run(
            script,
            [self._key(self.prefix, name)],
            [now, self._args(cfg), *extra],
            deadline=time.monotonic() + self.timeout_s,
        )
        return _view(reply)

    def flush(self, name: str, cfg: BreakerConfig, delta: tuple[int, int, int], trip_epoch: int | None) -> View:
        return self._call(self._flush, name, cfg, *delta, "" if trip_epoch is None else trip_epoch)

    def acquire_probe(self, name: str, cfg: BreakerConfig) -> View:
        return self._call(self._probe, name, cfg, "acquire")

    def record_probe(self, name: str, cfg: BreakerConfig, epoch: int, failed: bool, slow: bool) -> View:
        return self._call(self._probe, name, cfg, "record", epoch, int(failed), int(slow))

    def release_probe(self, name: str, cfg: BreakerConfig, epoch: int) -> View:
        return self._call(self._probe, name, cfg, "release", epoch)

    def control(self, name: str, cfg: BreakerConfig, op: str) -> View:
        return self._call(self._control, name, cfg, op)


def _is_async(client: Any) -> bool:
    mod = type(client).__module__
    return mod.startswith("redis.asyncio")


class AsyncRedisBreakerStore:
    """The asyncio twin of :class:`RedisBreakerStore` over a ``redis.asyncio`` client: the same keys, scripts and
    outage policy; the flusher is a task of the event loop (started by ``async with store:`` / ``await
    store.start()``, or by itself when a breaker attaches inside a running loop); probes of ``async def``
    functions are awaited. Sync functions decorated with a breaker on this store use local probes, and a sync
    ``force_open()``/``reset()`` reaches the store with the next flush (``await breaker.aforce_open()`` at once)."""

    is_async = True

    def __init__(
        self,
        redis_client: AsyncRedisLike,
        prefix: str = "breaker",
        *,
        flush_s: float | None = 0.1,
        timeout_s: float = 0.25,
        clock: Clock | None = None,
        direct: bool = True,
    ) -> None:
        from distkit._redis import AsyncRunner, Script, key

        if not _is_async(redis_client):
            raise InvalidBreakerConfigError(
                "AsyncRedisBreakerStore needs a redis.asyncio client; use RedisBreakerStore for a sync client"
            )
        if flush_s is not None and flush_s <= 0:
            raise InvalidBreakerConfigError(f"flush_s must be > 0 or None, got {flush_s!r}")
        self.redis = redis_client
        self.prefix = prefix
        self.flush_s = flush_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._key = key
        key(prefix, "x")
        self._run = AsyncRunner(redis_client, direct=direct, timeout_s=timeout_s)
        self._flush = Script("resilience", "flush")
        self._probe = Script("resilience", "probe")
        self._control = Script("resilience", "control")
        self.flusher = AsyncFlusher(flush_s, prefix)
        self._cfg_args: dict[BreakerConfig, str] = {}

    def attach(self, breaker: Any) -> None:
        self.flusher.attach(breaker)

    def detach(self, breaker: Any) -> None:
        self.flusher.detach(breaker)

    async def start(self) -> None:
        """Start the flusher task in the running loop (idempotent)."""
        self.flusher.start()

    async def aclose(self) -> None:
        """Stop the flusher task and close the direct lane's connections (the client stays yours)."""
        await self.flusher.stop()
        await self._run.aclose()

    def close(self) -> None:
        raise TypeError("AsyncRedisBreakerStore holds asyncio connections: use `await store.aclose()`")

    async def __aenter__(self) -> AsyncRedisBreakerStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, script: Any, name: str, cfg: BreakerConfig, *extra: Any) -> View:
        now = self._clock() if self._clock is not None else ""
        reply = await self._run(
            script,
            [self._key(self.prefix, name)],
            [now, _packed(self._cfg_args, cfg), *extra],
            deadline=time.monotonic() + self.timeout_s,
        )
        return _view(reply)

    async def flush(
        self, name: str, cfg: BreakerConfig, delta: tuple[int, int, int], trip_epoch: int | None
    ) -> View:
        return await self._call(self._flush, name, cfg, *delta, "" if trip_epoch is None else trip_epoch)

    async def acquire_probe(self, name: str, cfg: BreakerConfig) -> View:
        return await self._call(self._probe, name, cfg, "acquire")

    async def record_probe(self, name: str, cfg: BreakerConfig, epoch: int, failed: bool, slow: bool) -> View:
        return await self._call(self._probe, name, cfg, "record", epoch, int(failed), int(slow))

    async def release_probe(self, name: str, cfg: BreakerConfig, epoch: int) -> View:
        return await self._call(self._probe, name, cfg, "release", epoch)

    async def control(self, name: str, cfg: BreakerConfig, op: str) -> View:
        return await self._call(self._control, name, cfg, op)
