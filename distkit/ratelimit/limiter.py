"""The limiter classes: an algorithm (pure math + its Lua twin) bound to a backend.

Sync and async share everything but the backend call: :meth:`Limiter._finish` turns a backend answer into
a :class:`Decision`, :meth:`Limiter._on_error` applies the failure policy, and ``acquire`` on an
:class:`~distkit.ratelimit.AsyncRedisBackend` returns an awaitable doing the same steps.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from distkit.errors import BackendUnavailableError, InvalidRateError, RateLimitExceeded
from distkit.ratelimit import algorithms
from distkit.ratelimit.algorithms import Params, Raw
from distkit.ratelimit.backends import MemoryBackend, StepFn
from distkit.ratelimit.metrics import DecisionMetrics
from distkit.ratelimit.policy import FailurePolicy
from distkit.ratelimit.rate import Decision, Rate

log = logging.getLogger(__name__)
CONFIG_REFRESH_S = 1.0
CONFIG_TTL_S = 30 * 86400


def _backend_errors() -> tuple[type[BaseException], ...]:
    try:
        import redis

        return (redis.RedisError, OSError)
    except ImportError:  # pragma: no cover - memory-only installs
        return (OSError,)


class _Hot:
    """What every decision needs and only a rate change alters, computed once per rate (the hot path)."""

    __slots__ = ("limit", "params", "rate", "window_s")

    def __init__(self, rate: Rate, params: Params) -> None:
        self.rate, self.params, self.limit, self.window_s = rate, params, params.limit, rate.per_s


class Limiter:
    """Base of every limiter; see the subclasses for the algorithms."""

    algorithm: str = ""
    kind: str = ""
    _step: StepFn

    @staticmethod
    def limit_of(limit: int | None, rate: Rate) -> int:
        return limit if limit is not None else rate.count

    def __init__(
        self,
        rate: Rate,
        *,
        backend: Any = None,
        limit: int | None = None,
        queue: bool = False,
        on_backend_error: FailurePolicy = FailurePolicy.FAIL_CLOSED,
        name: str | None = None,
    ) -> None:
        if not isinstance(rate, Rate):
            raise InvalidRateError(f"rate must be a distkit.ratelimit.Rate, got {rate!r}")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise InvalidRateError(f"burst/capacity must be an int >= 1, got {limit!r}")
        self.rate = rate
        self.backend: Any = backend if backend is not None else MemoryBackend()
        self.on_backend_error = on_backend_error
        # the name scopes the keys (two limiters never share state) and the dynamic-rate config; the default
        # includes the initial rate, like `limits`, so it is stable across set_rate()
        self.name = name or f"{self.kind}:{rate.count}/{rate.per_s:g}s:{self.limit_of(limit, rate)}"
        self._fixed_limit = limit
        self._queue = queue
        self._warmup_us = 0
        self._fallback: MemoryBackend | None = None
        self._config_checked = 0.0
        self._errors = _backend_errors()
        self._remote = bool(getattr(self.backend, "is_remote", False))
        self._metrics = DecisionMetrics(self.name)
        self._hot_state: _Hot | None = None

    # -- parameters --------------------------------------------------------------------------------
    @property
    def limit(self) -> int:
        """Requests allowed at once (``Decision.limit``)."""
        return self._fixed_limit if self._fixed_limit is not None else self.rate.count

    def _hot(self) -> _Hot:
        h = self._hot_state
        if h is None or h.rate is not self.rate:
            params = Params(
                limit=self.limit,
                period_us=self.rate.period_us,
                interval_us=self.rate.interval_us,
                queue=self._queue,
                warmup_us=self._warmup_us,
            )
            h = self._hot_state = _Hot(self.rate, params)
        return h

    def params(self) -> Params:
        """The script parameters, cached until the rate changes."""
        return self._hot().params

    def _scoped(self, key: str) -> str:
        if key.__class__ is not str or not key:
            raise InvalidRateError(f"rate-limit key must be a non-empty string, got {key!r}")
        return f"{self.name}:{key}"

    def _scoped_many(self, requests: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
        return [(self._scoped(k), c) for k, c in requests]

    def _check_cost(self, cost: int) -> None:
        if cost.__class__ is int and 0 <= cost <= self._hot().limit:
            return
        if not isinstance(cost, int) or isinstance(cost, bool) or cost < 0:
            raise InvalidRateError(f"cost must be an int >= 0 (0 = peek), got {cost!r}")
        if cost > self.limit:
            raise InvalidRateError(
                f"cost {cost} exceeds the limit {self.limit}: it could never be allowed; "
                "raise the burst/capacity or split the request"
            )

    # -- shared decision plumbing --------------------------------------------------------------------
    def _finish(self, raw: Raw, fallback: str = "") -> Decision:
        allowed, remaining, retry_us, reset_us, delay_us = raw
        h = self._hot()
        d = Decision(
            allowed == 1,
            h.limit,
            remaining if remaining > 0 else 0,
            retry_us / 1e6 if retry_us > 0 else 0.0,
            reset_us / 1e6 if reset_us > 0 else 0.0,
            delay_us / 1e6 if delay_us > 0 else 0.0,
            h.window_s,
            fallback,
        )
        self._metrics.record(d.allowed, fallback)
        return d

    def _on_error(self, exc: BaseException, key: str, cost: int) -> Decision:
        policy = self.on_backend_error
        log.warning("rate limiter %s: backend error %r; applying %s", self.name, exc, policy.name)
        if policy is FailurePolicy.RAISE:
            raise BackendUnavailableError(f"rate limiter {self.name!r}: backend unavailable: {exc!r}") from exc
        if policy is FailurePolicy.FAIL_OPEN:
            return self._finish((1, self.limit, 0.0, 0.0, 0.0), fallback=policy.value)
        if policy is FailurePolicy.FAIL_CLOSED:
            return self._finish((0, 0, 1e6, 1e6, 0.0), fallback=policy.value)
        if self._fallback is None:
            self._fallback = MemoryBackend()
        return self._finish(
            self._fallback.decide(self.algorithm, type(self)._step, key, cost, self.params()), fallback=policy.value
        )

    # -- public API (sync, or awaitables on an async backend) ---------------------------------------------
    def acquire(self, key: str, cost: int = 1) -> Any:
        """Take ``cost`` from ``key``'s allowance: a :class:`Decision` (awaitable on an async backend)."""
        self._check_cost(cost)
        if self.backend.is_async:
            return self._aacquire(key, cost)
        self._refresh_config()
        try:
            raw = self.backend.decide(self.algorithm, type(self)._step, self._scoped(key), cost, self.params())
        except self._errors as exc:
            return self._on_error(exc, key, cost)
        return self._finish(raw)

    async def _aacquire(self, key: str, cost: int) -> Decision:
        await self._arefresh_config()
        try:
            raw = await self.backend.adecide(self.algorithm, type(self)._step, self._scoped(key), cost, self.params())
        except self._errors as exc:
            return self._on_error(exc, key, cost)
        return self._finish(raw)

    def peek(self, key: str) -> Any:
        """The current state for ``key`` without consuming anything (cost 0)."""
        return self.acquire(key, 0)

    def acquire_many(self, requests: Sequence[tuple[str, int]]) -> Any:
        """Decide several ``(key, cost)`` at once: one pipelined round trip on Redis."""
        for _, cost in requests:
            self._check_cost(cost)
        if self.backend.is_async:
            return self._aacquire_many(requests)
        self._refresh_config()
        try:
            raws = self.backend.decide_many(
                self.algorithm, type(self)._step, self._scoped_many(requests), self.params()
            )
        except self._errors as exc:
            return [self._on_error(exc, k, c) for k, c in requests]
        return [self._finish(r) for r in raws]

    async def _aacquire_many(self, requests: Sequence[tuple[str, int]]) -> list[Decision]:
        await self._arefresh_config()
        try:
            raws = await self.backend.adecide_many(
                self.algorithm, type(self)._step, self._scoped_many(requests), self.params()
            )
        except self._errors as exc:
            return [self._on_error(exc, k, c) for k, c in requests]
        return [self._finish(r) for r in raws]

    def wait(self, key: str, cost: int = 1, timeout: float | None = None) -> Any:
        """Block until allowed (Guava's ``acquire()``), or raise :class:`RateLimitExceeded` if that would take
        longer than ``timeout`` seconds. Queue-mode delays are slept through."""
        if self.backend.is_async:
            return self._await(key, cost, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        sleep = getattr(getattr(self.backend, "_clock", None), "sleep", time.sleep)
        while True:
            d: Decision = self.acquire(key, cost)
            if d.allowed:
                if d.delay_s:
                    sleep(d.delay_s)
                return d
            if deadline is not None and time.monotonic() + d.retry_after_s > deadline:
                raise RateLimitExceeded(d)
            sleep(max(d.retry_after_s, 0.001))

    async def _await(self, key: str, cost: int, timeout: float | None) -> Decision:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            d: Decision = await self.acquire(key, cost)
            if d.allowed:
                if d.delay_s:
                    await asyncio.sleep(d.delay_s)
                return d
            if deadline is not None and time.monotonic() + d.retry_after_s > deadline:
                raise RateLimitExceeded(d)
            await asyncio.sleep(max(d.retry_after_s, 0.001))

    # -- dynamic rate ------------------------------------------------------------------------------
    def set_rate(self, rate: Rate) -> Any:
        """Change the rate now; on Redis it is stored and every process using this limiter ``name`` picks it up
        within one second."""
        if not isinstance(rate, Rate):
            raise InvalidRateError(f"rate must be a Rate, got {rate!r}")
        self.rate = rate
        if getattr(self.backend, "is_remote", False):
            value = json.dumps(rate.to_json())
            if self.backend.is_async:
                return self.backend.aset_config(self.name, value, CONFIG_TTL_S)
            self.backend.set_config(self.name, value, CONFIG_TTL_S)
        return None

    def _apply_config(self, raw: bytes | None) -> None:
        self._config_checked = time.monotonic()
        if raw:
            cfg = json.loads(raw)
            rate = Rate(int(cfg["count"]), per_s=float(cfg["per_s"]))
            if rate != self.rate:
                log.info("rate limiter %s: rate changed to %s", self.name, rate)
                self.rate = rate

    def _config_due(self) -> bool:
        return self._remote and time.monotonic() - self._config_checked >= CONFIG_REFRESH_S

    def _refresh_config(self) -> None:
        if self._config_due():
            try:
                self._apply_config(self.backend.get_config(self.name))
            except self._errors:
                self._config_checked = time.monotonic()  # keep the last known rate; the decision path reports

    async def _arefresh_config(self) -> None:
        if self._config_due():
            try:
                self._apply_config(await self.backend.aget_config(self.name))
            except self._errors:
                self._config_checked = time.monotonic()


class TokenBucket(Limiter):
    """Refills at ``rate``, holds up to ``burst`` tokens (``Decision.limit = burst``). Stored as GCRA's single
    theoretical-arrival-time value, so a decision is O(1) with one key.

    ``warmup_s`` (Guava ``SmoothWarmingUp``): after ``warmup_s`` idle the bucket is cold; a cold bucket admits
    one request at a time at a third of the rate, rising linearly to the full rate and burst over ``warmup_s``
    of steady use (protects caches and connection pools that went cold).

    >>> limiter = TokenBucket(Rate(100, per_s=1.0), burst=20)
    >>> limiter.acquire("user:42").remaining
    19
    """

    algorithm = "gcra"
    _step = staticmethod(algorithms.gcra)

    def __init__(
        self,
        rate: Rate,
        burst: int | None = None,
        *,
        warmup_s: float = 0.0,
        backend: Any = None,
        on_backend_error: FailurePolicy = FailurePolicy.FAIL_CLOSED,
        name: str | None = None,
    ) -> None:
        if not isinstance(warmup_s, int | float) or warmup_s < 0:
            raise InvalidRateError(f"warmup_s must be a number of seconds >= 0, got {warmup_s!r}")
        limit = burst if burst is not None else rate.count
        if name is None and warmup_s:  # warm state has another shape: never share keys with a plain bucket
            name = f"token_bucket:{rate.count}/{rate.per_s:g}s:{limit}:warm{warmup_s:g}s"
        super().__init__(rate, backend=backend, limit=limit, on_backend_error=on_backend_error, name=name)
        self._warmup_us = round(warmup_s * 1_000_000)


class LeakyBucket(Limiter):
    """GCRA leaky bucket. ``mode="meter"`` rejects over capacity (redis-cell's ``CL.THROTTLE``);
    ``mode="queue"`` admits up to ``capacity`` queued requests with ``Decision.delay_s`` set so they run
    exactly ``1/rate`` apart (nginx ``limit_req`` without ``nodelay``)."""

    algorithm = "gcra"
    _step = staticmethod(algorithms.gcra)

    def __init__(
        self,
        rate: Rate,
        capacity: int,
        *,
        mode: str = "meter",
        backend: Any = None,
        on_backend_error: FailurePolicy = FailurePolicy.FAIL_CLOSED,
        name: str | None = None,
    ) -> None:
        if mode not in ("meter", "queue"):
            raise InvalidRateError(f"mode must be 'meter' or 'queue', got {mode!r}")
        super().__init__(
            rate,
            backend=backend,
            limit=capacity,
            queue=mode == "queue",
            on_backend_error=on_backend_error,
            name=name or f"leaky_{mode}:{rate.count}/{rate.per_s:g}s:{capacity}",
        )


class FixedWindow(Limiter):
    """At most ``rate.count`` per calendar window of ``rate.per_s`` (cheap; allows 2N across a boundary)."""

    algorithm = "fixed_window"
    kind = "fixed_window"
    _step = staticmethod(algorithms.fixed_window)


class SlidingWindowLog(Limiter):
    """Exact: never more than ``rate.count`` in *any* window of ``rate.per_s`` (keeps ≤ N timestamps)."""

    algorithm = "sliding_window_log"
    kind = "sliding_window_log"
    _step = staticmethod(algorithms.sliding_window_log)


class SlidingWindowCounter(Limiter):
    """O(1) approximation of the sliding window (Cloudflare): weighted previous window + current window."""

    algorithm = "sliding_window_counter"
    kind = "sliding_window_counter"
    _step = staticmethod(algorithms.sliding_window_counter)
