"""The limiter classes: an algorithm (pure math + its Lua twin) bound to a backend.

Sync and async share everything but the backend call: :meth:`Limiter._finish` turns a backend answer into
a :class:`Decision`, :meth:`Limiter._on_outage` applies the failure policy, and ``acquire`` on an
:class:`~distkit.ratelimit.AsyncRedisBackend` returns an awaitable doing the same steps.

Types: a limiter is generic in its backend (``TokenBucket[RedisBackend]``), so ``acquire`` is typed
``Decision`` on a sync backend and ``Awaitable[Decision]`` on an async one: a forgotten ``await`` fails mypy,
and at run time reading the un-awaited result raises :class:`~distkit.errors.RateLimitUsageError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
import weakref
from collections.abc import Awaitable, Coroutine, Generator, Sequence
from typing import TYPE_CHECKING, Any, Generic, NoReturn, cast, overload

from distkit._otel import add_event
from distkit.errors import (
    BackendUnavailableError,
    InvalidRateError,
    RateLimitBackendError,
    RateLimitExceeded,
    RateLimitUsageError,
)
from distkit.ratelimit import algorithms
from distkit.ratelimit.algorithms import SAFE, Params, Raw
from distkit.ratelimit.backends import AsyncRedisBackend, MemoryBackend, RedisBackend, StepFn
from distkit.ratelimit.metrics import DecisionMetrics
from distkit.ratelimit.policy import FailurePolicy
from distkit.ratelimit.rate import Decision, Rate, quota_policy

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    B = TypeVar("B", bound="MemoryBackend | RedisBackend | AsyncRedisBackend", default=MemoryBackend)
else:
    from typing import TypeVar

    B = TypeVar("B")  # the default (MemoryBackend) exists for type checkers only (PEP 696)
T = TypeVar("T")

log = logging.getLogger(__name__)
CONFIG_TTL_S = 30 * 86400
_REMOTE: weakref.WeakSet[Limiter[Any]] = weakref.WeakSet()  # limiters whose rate a backend watcher follows


def _rewatch_after_fork() -> None:
    """A forked child has no watcher thread: each remote limiter starts one again on its next decision."""
    for limiter in list(_REMOTE):
        limiter._watch_pending = True


os.register_at_fork(after_in_child=_rewatch_after_fork)
MAX_LOG_LIMIT = 1_000_000  # sliding log: live entries per key (one per allowed decision)


def _outage_errors() -> tuple[type[BaseException], ...]:
    """What counts as "the backend is unavailable": the Runner's typed outage, connection and timeout errors
    (redis-py's and the OS's), and a cluster that cannot serve the slot. Nothing else goes to the policy."""
    try:
        import redis
        from redis.exceptions import ClusterDownError, TryAgainError

        return (BackendUnavailableError, redis.ConnectionError, redis.TimeoutError, ClusterDownError, TryAgainError,
                OSError)  # fmt: skip
    except ImportError:  # pragma: no cover - memory-only installs
        return (BackendUnavailableError, OSError)


def _reply_errors() -> tuple[type[BaseException], ...]:
    """Errors that are answers, not outages: error replies and replies that are not a decision."""
    try:
        import redis

        return (redis.RedisError, ValueError, TypeError, IndexError)
    except ImportError:  # pragma: no cover
        return (ValueError, TypeError, IndexError)


def parse_policy(value: Any) -> FailurePolicy:
    """A :class:`FailurePolicy`, or its value / name as a string (``"fail_open"``, ``"FAIL_OPEN"``)."""
    if isinstance(value, FailurePolicy):
        return value
    if isinstance(value, str):
        v = value.strip().lower()
        for p in FailurePolicy:
            if v == p.value:
                return p
    raise InvalidRateError(
        f"on_backend_error must be a FailurePolicy or one of {[p.value for p in FailurePolicy]}, got {value!r}"
    )


class Pending(Generic[T]):
    """An async limiter's answer: ``await`` it. Using it as the answer itself (``.allowed``, ``if d:``) raises
    :class:`~distkit.errors.RateLimitUsageError` instead of a confusing ``AttributeError: 'coroutine'``."""

    __slots__ = ("_coro",)

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro

    def __await__(self) -> Generator[Any, None, T]:
        return self._coro.__await__()

    def _misuse(self) -> NoReturn:
        self._coro.close()
        raise RateLimitUsageError(
            "this limiter runs on an AsyncRedisBackend: its methods return awaitables; "
            "write `d = await limiter.acquire(key)` (or use RedisBackend for sync code)"
        )

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("_"):  # protocol probes (asyncio, inspect, copy) get the usual answer
            raise AttributeError(name)
        self._misuse()

    def __bool__(self) -> bool:  # noqa: PLE0304 - it only raises
        self._misuse()

    def __iter__(self) -> NoReturn:
        self._misuse()


class _Hot:
    """What every decision needs and only a rate change alters, computed once per rate (the hot path)."""

    __slots__ = ("limit", "max_cost", "params", "quota", "quota_w", "rate", "window_s")

    def __init__(self, rate: Rate, params: Params, limit: int, max_cost: int, quota: tuple[int, int]) -> None:
        self.rate, self.params, self.limit, self.window_s = rate, params, limit, rate.per_s
        self.max_cost = max_cost
        self.quota, self.quota_w = quota


class Limiter(Generic[B]):
    """Base of every limiter; see the subclasses for the algorithms."""

    algorithm: str = ""
    kind: str = ""
    mode: str = "gcra"
    _step: StepFn
    backend: B

    @staticmethod
    def limit_of(limit: int | None, rate: Rate) -> int:
        return limit if limit is not None else rate.count

    def __init__(
        self,
        rate: Rate,
        *,
        backend: B | None = None,
        limit: int | None = None,
        on_backend_error: FailurePolicy | str = FailurePolicy.FAIL_CLOSED,
        name: str | None = None,
    ) -> None:
        if not isinstance(rate, Rate):
            raise InvalidRateError(f"rate must be a distkit.ratelimit.Rate, got {rate!r}")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise InvalidRateError(f"burst/capacity must be an int >= 1, got {limit!r}")
        if backend is not None and not isinstance(backend, MemoryBackend | RedisBackend | AsyncRedisBackend):
            raise InvalidRateError(
                f"backend must be a MemoryBackend, RedisBackend or AsyncRedisBackend, got {type(backend).__name__}"
            )
        if name is not None and (not isinstance(name, str) or not name):
            raise InvalidRateError(f"name must be a non-empty string, got {name!r}")
        self.rate = rate
        self.backend = backend if backend is not None else MemoryBackend()  # type: ignore[assignment]
        self.on_backend_error = parse_policy(on_backend_error)
        # the name scopes the keys (two limiters never share state) and the dynamic-rate config; the default
        # includes the initial rate, like `limits`, so it is stable across set_rate()
        self.name = name or f"{self.kind}:{rate.count}/{rate.per_s:g}s:{self.limit_of(limit, rate)}"
        self._fixed_limit = limit
        self._fallback: MemoryBackend | None = None
        self._outages = _outage_errors()
        self._replies = _reply_errors()
        self._remote = bool(getattr(self.backend, "is_remote", False))
        self._is_async = bool(self.backend.is_async)
        self._watch_pending = self._remote
        if self._remote:
            _REMOTE.add(self)
        self._in_outage = False
        self._metrics = DecisionMetrics(self.name)
        self._hot_state: _Hot = self._make_hot(rate)
        # hot-path shortcuts: the scoped-key prefix, the step function, the backend's decide for this algorithm
        self._stepfn: StepFn = type(self)._step
        if isinstance(self.backend, MemoryBackend):  # the memory key includes the algorithm: skip a concat
            self._prefix = f"{self.algorithm}:{self.name}:"
            self._decide: Any = self.backend.decide_key
        else:
            self._prefix = self.name + ":"
            self._decide = getattr(self.backend, "decider", lambda algo: None)(self.algorithm)

    # -- parameters --------------------------------------------------------------------------------
    @property
    def limit(self) -> int:
        """Requests allowed at once (``Decision.limit``)."""
        return self._limit_for(self.rate)

    def _limit_for(self, rate: Rate) -> int:
        return self._fixed_limit if self._fixed_limit is not None else rate.count

    def _make_params(self, rate: Rate) -> Params:
        limit = self._limit_for(rate)
        if limit * rate.period_us >= SAFE:
            raise InvalidRateError(
                f"limit {limit} x period {rate.period_us} µs must stay below 2**53 (exact integer arithmetic "
                "on Redis); use a smaller burst/capacity or a shorter period"
            )
        return Params(limit=limit, period_us=rate.period_us, count=rate.count, mode=self.mode)

    def _make_hot(self, rate: Rate) -> _Hot:
        params = self._make_params(rate)
        kind = {"gcra": "gcra", "queue": "gcra", "nginx": "nginx", "warm": "warm"}.get(params.mode, "window")
        at_once = 1 if params.mode == "warm" else params.limit
        limit = {"warm": 1, "nginx": params.limit + 1}.get(params.mode, params.limit)
        return _Hot(rate, params, limit, self._max_cost(params), quota_policy(rate, at_once, kind))

    def _max_cost(self, params: Params) -> int:
        return params.limit

    def _hot(self) -> _Hot:
        h = self._hot_state
        if h.rate is not self.rate:
            h = self._hot_state = self._make_hot(self.rate)
        return h

    def params(self) -> Params:
        """The script parameters, cached until the rate changes."""
        return self._hot().params

    def _scoped(self, key: str) -> str:
        if key.__class__ is not str or not key:
            raise InvalidRateError(f"rate-limit key must be a non-empty string, got {key!r}")
        return self.name + ":" + key

    def _check_cost(self, cost: Any, h: _Hot) -> None:
        if not isinstance(cost, int) or isinstance(cost, bool) or cost < 0:
            raise InvalidRateError(f"cost must be an int >= 0 (0 = peek), got {cost!r}")
        if cost > h.max_cost:
            raise InvalidRateError(
                f"cost {cost} exceeds the limit {h.max_cost}: it could never be allowed; "
                "raise the burst/capacity or split the request"
            )

    # -- shared decision plumbing --------------------------------------------------------------------
    def _finish(self, raw: Raw, fallback: str = "") -> Decision:
        allowed, remaining, retry_us, reset_us, delay_us = raw
        h = self._hot_state
        d = Decision(
            allowed == 1,
            h.limit,
            remaining if remaining > 0 else 0,
            retry_us / 1e6 if retry_us > 0 else 0.0,
            reset_us / 1e6 if reset_us > 0 else 0.0,
            delay_us / 1e6 if delay_us > 0 else 0.0,
            h.window_s,
            fallback,
            h.quota,
            h.quota_w,
        )
        self._metrics.record(d.allowed, fallback)
        add_event("distkit.ratelimit.decision", {"limiter": self.name, "allowed": d.allowed, "remaining": d.remaining,
                                                 "policy": fallback or "backend"})
        if self._in_outage and not fallback:
            self._in_outage = False
            log.info("rate limiter %s: backend answers again", self.name)
        return d

    def _on_outage(self, exc: BaseException, key: str, cost: int) -> Decision:
        """An outage (and only an outage) is answered by the failure policy. Cheap: it logs once per outage."""
        policy = self.on_backend_error
        if not self._in_outage:
            self._in_outage = True
            log.warning("rate limiter %s: backend unavailable (%r); applying %s", self.name, exc, policy.name)
        if policy is FailurePolicy.RAISE:
            raise BackendUnavailableError(f"rate limiter {self.name!r}: backend unavailable: {exc!r}") from exc
        if policy is FailurePolicy.FAIL_OPEN:
            return self._finish((1, self._hot_state.limit, 0, 0, 0), fallback=policy.value)
        if policy is FailurePolicy.FAIL_CLOSED:
            return self._finish((0, 0, 1_000_000, 1_000_000, 0), fallback=policy.value)
        if self._fallback is None:
            self._fallback = MemoryBackend()
        raw = self._fallback.decide(self.algorithm, type(self)._step, self._scoped(key), cost, self._hot_state.params)
        return self._finish(raw, fallback=policy.value)

    def _backend_error(self, exc: BaseException, key: str) -> RateLimitBackendError:
        return RateLimitBackendError(
            f"rate limiter {self.name!r}: the backend could not decide key {key!r}: {exc}. This is not an outage "
            "(the failure policy does not apply): another writer may use the limiter's keys (check the prefix) "
            "or the stored state is corrupt (delete the key)"
        )

    def _finish_many(self, outcomes: Sequence[Any], requests: Sequence[tuple[str, int]]) -> list[Decision]:
        """A batch's answers as decisions; metrics are counted once per batch (two counter adds, not 1000)."""
        h = self._hot_state
        limit, window_s, quota, quota_w = h.limit, h.window_s, h.quota, h.quota_w
        decisions: list[Decision | None] = []
        append = decisions.append
        errors: dict[int, BaseException] = {}
        allowed_n = 0
        for i, o in enumerate(outcomes):
            if o.__class__ is tuple:
                allowed, remaining, retry_us, reset_us, delay_us = o
                ok = allowed == 1
                allowed_n += ok
                append(Decision(ok, limit, remaining if remaining > 0 else 0, retry_us / 1e6 if retry_us > 0 else 0.0,
                                reset_us / 1e6 if reset_us > 0 else 0.0, delay_us / 1e6 if delay_us > 0 else 0.0,
                                window_s, "", quota, quota_w))  # fmt: skip
            else:
                append(None)
                errors[i] = self._backend_error(o, requests[i][0])
        self._metrics.record(True, "", allowed_n)
        self._metrics.record(False, "", len(decisions) - len(errors) - allowed_n)
        if self._in_outage and len(errors) < len(decisions):
            self._in_outage = False
            log.info("rate limiter %s: backend answers again", self.name)
        if errors:
            first = min(errors)
            raise RateLimitBackendError(
                f"{len(errors)} of {len(requests)} keys could not be decided (the others were; see .decisions): "
                f"first at position {first}: {errors[first]}",
                decisions=decisions,
                errors=errors,
            )
        return decisions  # type: ignore[return-value]

    def _start_watch(self) -> None:
        self._watch_pending = False
        self.backend.watch(self)  # type: ignore[union-attr]

    # -- public API (sync, or awaitables on an async backend) ---------------------------------------------
    @overload
    def acquire(self: Limiter[AsyncRedisBackend], key: str, cost: int = 1) -> Awaitable[Decision]: ...
    @overload
    def acquire(self: Limiter[MemoryBackend], key: str, cost: int = 1) -> Decision: ...
    @overload
    def acquire(self: Limiter[RedisBackend], key: str, cost: int = 1) -> Decision: ...
    def acquire(self, key: str, cost: int = 1) -> Decision | Awaitable[Decision]:
        """Take ``cost`` from ``key``'s allowance: a :class:`Decision` (awaitable on an async backend)."""
        h = self._hot_state
        if h.rate is not self.rate:
            h = self._hot()
        if cost.__class__ is not int or not 0 <= cost <= h.max_cost:
            self._check_cost(cost, h)
        if self._is_async:
            return Pending(self._aacquire(key, cost))
        if self._watch_pending:
            self._start_watch()
        if key.__class__ is not str or not key:
            self._scoped(key)  # raises the typed error
        try:
            raw = self._decide(self._prefix + key, self._stepfn, cost, h.params)
        except self._outages as exc:
            return self._on_outage(exc, key, cost)
        except self._replies as exc:
            raise self._backend_error(exc, key) from exc
        return self._finish(raw)

    async def _aacquire(self, key: str, cost: int) -> Decision:
        if self._watch_pending:
            self._start_watch()
        h = self._hot_state
        scoped = self._scoped(key)
        try:
            raw = await self.backend.adecide(self.algorithm, type(self)._step, scoped, cost, h.params)  # type: ignore[union-attr]
        except self._outages as exc:
            return self._on_outage(exc, key, cost)
        except self._replies as exc:
            raise self._backend_error(exc, key) from exc
        return self._finish(raw)

    @overload
    def peek(self: Limiter[AsyncRedisBackend], key: str) -> Awaitable[Decision]: ...
    @overload
    def peek(self: Limiter[MemoryBackend], key: str) -> Decision: ...
    @overload
    def peek(self: Limiter[RedisBackend], key: str) -> Decision: ...
    def peek(self, key: str) -> Decision | Awaitable[Decision]:
        """The current state for ``key`` without consuming anything (cost 0)."""
        return cast(Any, self).acquire(key, 0)  # type: ignore[no-any-return]

    @overload
    def acquire_many(
        self: Limiter[AsyncRedisBackend], requests: Sequence[tuple[str, int]]
    ) -> Awaitable[list[Decision]]: ...
    @overload
    def acquire_many(self: Limiter[MemoryBackend], requests: Sequence[tuple[str, int]]) -> list[Decision]: ...
    @overload
    def acquire_many(self: Limiter[RedisBackend], requests: Sequence[tuple[str, int]]) -> list[Decision]: ...
    def acquire_many(self, requests: Sequence[tuple[str, int]]) -> list[Decision] | Awaitable[list[Decision]]:
        """Decide several ``(key, cost)`` at once: one pipelined round trip on Redis. An outage sends every key
        to the failure policy; a key that fails alone (``WRONGTYPE``…) raises
        :class:`~distkit.errors.RateLimitBackendError` *after* every other key was decided (``.decisions``)."""
        h = self._hot()
        scoped: list[tuple[str, int]] = []
        append, prefix, max_cost = scoped.append, self.name + ":", h.max_cost
        for k, cost in requests:
            if cost.__class__ is not int or not 0 <= cost <= max_cost:
                self._check_cost(cost, h)
            if k.__class__ is not str or not k:
                self._scoped(k)  # raises the typed error
            append((prefix + k, cost))
        if self._is_async:
            return Pending(self._aacquire_many(requests, scoped))
        if self._watch_pending:
            self._start_watch()
        try:
            outcomes = self.backend.decide_many(self.algorithm, type(self)._step, scoped, h.params)  # type: ignore[union-attr]
        except self._outages as exc:
            return [self._on_outage(exc, k, c) for k, c in requests]
        except self._replies as exc:
            outcomes = [exc] * len(requests)
        return self._finish_many(outcomes, requests)

    async def _aacquire_many(
        self, requests: Sequence[tuple[str, int]], scoped: list[tuple[str, int]]
    ) -> list[Decision]:
        if self._watch_pending:
            self._start_watch()
        try:
            outcomes = await self.backend.adecide_many(  # type: ignore[union-attr]
                self.algorithm, type(self)._step, scoped, self._hot_state.params
            )
        except self._outages as exc:
            return [self._on_outage(exc, k, c) for k, c in requests]
        except self._replies as exc:
            outcomes = [exc] * len(requests)
        return self._finish_many(outcomes, requests)

    @overload
    def wait(
        self: Limiter[AsyncRedisBackend], key: str, cost: int = 1, timeout: float | None = None
    ) -> Awaitable[Decision]: ...
    @overload
    def wait(self: Limiter[MemoryBackend], key: str, cost: int = 1, timeout: float | None = None) -> Decision: ...
    @overload
    def wait(self: Limiter[RedisBackend], key: str, cost: int = 1, timeout: float | None = None) -> Decision: ...
    def wait(self, key: str, cost: int = 1, timeout: float | None = None) -> Decision | Awaitable[Decision]:
        """Block until allowed (Guava's ``acquire()``), or raise :class:`RateLimitExceeded` if that would take
        longer than ``timeout`` seconds. Queue-mode delays are slept through."""
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout >= 0
        ):
            raise InvalidRateError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")
        if self._is_async:
            return Pending(self._await(key, cost, timeout))
        deadline = None if timeout is None else time.monotonic() + timeout
        sleep = getattr(getattr(self.backend, "_clock", None), "sleep", time.sleep)
        while True:
            d: Decision = cast(Any, self).acquire(key, cost)
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
            d: Decision = await cast(Any, self).acquire(key, cost)
            if d.allowed:
                if d.delay_s:
                    await asyncio.sleep(d.delay_s)
                return d
            if deadline is not None and time.monotonic() + d.retry_after_s > deadline:
                raise RateLimitExceeded(d)
            await asyncio.sleep(max(d.retry_after_s, 0.001))

    # -- dynamic rate ------------------------------------------------------------------------------
    @overload
    def set_rate(self: Limiter[AsyncRedisBackend], rate: Rate) -> Awaitable[None]: ...
    @overload
    def set_rate(self: Limiter[MemoryBackend], rate: Rate) -> None: ...
    @overload
    def set_rate(self: Limiter[RedisBackend], rate: Rate) -> None: ...
    def set_rate(self, rate: Rate) -> Awaitable[None] | None:
        """Change the rate. On Redis it is stored first (every process using this limiter ``name`` picks it up
        within about a second, in the background); only then does this process switch. If Redis cannot store
        it, :class:`~distkit.errors.BackendUnavailableError` is raised and nothing changed."""
        if not isinstance(rate, Rate):
            raise InvalidRateError(f"rate must be a Rate, got {rate!r}")
        self._make_hot(rate)  # validates the new rate for this limiter before anything is stored
        if not self._remote:
            self.rate = rate
            return None
        value = json.dumps(rate.to_json())
        if self._is_async:
            return Pending(self._aset_rate(rate, value))
        try:
            self.backend.set_config(self.name, value, CONFIG_TTL_S)  # type: ignore[union-attr]
        except self._outages as exc:
            raise BackendUnavailableError(
                f"rate limiter {self.name!r}: could not store the new rate {rate} (backend unavailable: {exc!r}); "
                "the rate is unchanged, retry when Redis is back"
            ) from exc
        except self._replies as exc:
            raise self._backend_error(exc, "__rate__") from exc
        self.rate = rate
        return None

    async def _aset_rate(self, rate: Rate, value: str) -> None:
        try:
            await self.backend.aset_config(self.name, value, CONFIG_TTL_S)  # type: ignore[union-attr]
        except self._outages as exc:
            raise BackendUnavailableError(
                f"rate limiter {self.name!r}: could not store the new rate {rate} (backend unavailable: {exc!r}); "
                "the rate is unchanged, retry when Redis is back"
            ) from exc
        except self._replies as exc:
            raise self._backend_error(exc, "__rate__") from exc
        self.rate = rate

    def _apply_config(self, raw: bytes | None) -> None:
        """Called by the backend's watcher with the stored config (never on a decision path). A value that is
        not a valid rate for this limiter is logged and ignored: the last good rate stays."""
        if not raw:
            return
        try:
            cfg = json.loads(raw)
            count, per_s = cfg["count"], cfg["per_s"]
            if not isinstance(per_s, int | float) or isinstance(per_s, bool) or not math.isfinite(per_s):
                raise InvalidRateError(f"per_s {per_s!r}")
            rate = Rate(count, per_s=float(per_s))
            self._make_hot(rate)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("rate limiter %s: ignoring the stored rate %r (%s); keeping %s", self.name, raw, exc, self.rate)
            return
        if rate != self.rate:
            log.info("rate limiter %s: rate changed to %s", self.name, rate)
            self.rate = rate

    def _config_failed(self, exc: BaseException) -> None:
        log.debug("rate limiter %s: config refresh failed (%r); keeping %s", self.name, exc, self.rate)


class TokenBucket(Limiter[B]):
    """Refills at ``rate``, holds up to ``burst`` tokens (``Decision.limit = burst``). Stored as GCRA's single
    theoretical-arrival-time value, so a decision is O(1) with one key.

    ``warmup_s``: Guava's ``RateLimiter.create(rate, warmupPeriod)`` (``SmoothWarmingUp``, cold factor 3), ported
    operation for operation and checked against Guava's published test sequences. A fresh or long-idle key is
    cold: requests are served one at a time (no burst), the interval starts at 3x the stable one and falls to it
    as the stored permits are used up over ``warmup_s``; idleness refills the stored permits over ``warmup_s``.
    It is a Guava limiter, so ``burst`` must be left out (Guava's warm-up has none) and a request is allowed when
    the previous one's cost has been paid (``tryAcquire`` semantics). Cost may be up to ``rate.count``.

    >>> limiter = TokenBucket(Rate(100, per_s=1.0), burst=20)
    >>> limiter.acquire("user:42").remaining
    19
    """

    algorithm = "gcra"
    kind = "token_bucket"
    _step = staticmethod(algorithms.gcra)

    def __init__(
        self,
        rate: Rate,
        burst: int | None = None,
        *,
        warmup_s: float = 0.0,
        backend: B | None = None,
        on_backend_error: FailurePolicy | str = FailurePolicy.FAIL_CLOSED,
        name: str | None = None,
    ) -> None:
        if (
            not isinstance(warmup_s, int | float)
            or isinstance(warmup_s, bool)
            or not math.isfinite(warmup_s)
            or not 0 <= warmup_s <= 86400
        ):
            raise InvalidRateError(f"warmup_s must be a number of seconds from 0 to 86400, got {warmup_s!r}")
        self._warmup_us = round(warmup_s * 1_000_000)
        if self._warmup_us:
            if burst is not None:
                raise InvalidRateError(
                    "warmup_s follows Guava's SmoothWarmingUp, which has no burst: drop burst= "
                    "(or drop warmup_s for a bursty token bucket)"
                )
            self.mode = "warm"
            if name is None:  # warm state has another shape: never share keys with a plain bucket
                name = f"token_bucket:{rate.count}/{rate.per_s:g}s:warm{warmup_s:g}s"
            limit = 1
        else:
            limit = burst if burst is not None else rate.count
        super().__init__(rate, backend=backend, limit=limit, on_backend_error=on_backend_error, name=name)

    def _make_params(self, rate: Rate) -> Params:
        p = super()._make_params(rate)
        if self.mode == "warm":
            return Params(limit=1, period_us=p.period_us, count=p.count, mode="warm", warmup_us=self._warmup_us)
        return p

    def _max_cost(self, params: Params) -> int:
        return params.count if params.mode == "warm" else params.limit


class LeakyBucket(Limiter[B]):
    """GCRA leaky bucket. ``mode="meter"`` rejects over capacity (redis-cell's ``CL.THROTTLE``);
    ``mode="queue"`` admits up to ``capacity`` queued requests with ``Decision.delay_s`` set so they run
    exactly ``1/rate`` apart. For nginx's ``limit_req`` semantics use :meth:`LeakyBucket.nginx`."""

    algorithm = "gcra"
    kind = "leaky_bucket"
    _step = staticmethod(algorithms.gcra)

    def __init__(
        self,
        rate: Rate,
        capacity: int,
        *,
        mode: str = "meter",
        backend: B | None = None,
        on_backend_error: FailurePolicy | str = FailurePolicy.FAIL_CLOSED,
        name: str | None = None,
        _nginx_delay: int | None = None,
    ) -> None:
        if mode not in ("meter", "queue", "nginx"):
            raise InvalidRateError(f"mode must be 'meter' or 'queue' (or use LeakyBucket.nginx), got {mode!r}")
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < (0 if mode == "nginx" else 1):
            raise InvalidRateError(f"capacity must be an int >= 1, got {capacity!r}")
        self.mode = {"meter": "gcra", "queue": "queue", "nginx": "nginx"}[mode]
        self._nginx_delay = _nginx_delay or 0
        default = f"leaky_{mode}:{rate.count}/{rate.per_s:g}s:{capacity}"
        if mode == "nginx":
            if rate.per_s not in (1, 60):
                raise InvalidRateError(f"nginx rates are per second or per minute (r/s, r/m), got per_s={rate.per_s}")
            if rate.count * 1_000_000_000 >= SAFE:
                raise InvalidRateError(f"nginx mode supports up to 9,000,000 r/s, got {rate.count}")
            default += f":d{self._nginx_delay}"
        super().__init__(
            rate,
            backend=backend,
            limit=capacity if mode != "nginx" else capacity + 1,
            on_backend_error=on_backend_error,
            name=name or default,
        )
        self._burst = capacity

    @classmethod
    def nginx(
        cls,
        rate: Rate | str,
        burst: int = 0,
        *,
        nodelay: bool = False,
        delay: int | None = None,
        backend: B | None = None,
        on_backend_error: FailurePolicy | str = FailurePolicy.FAIL_CLOSED,
        name: str | None = None,
    ) -> LeakyBucket[B]:
        """nginx ``limit_req zone=… rate=R burst=N [nodelay | delay=D]``, decision for decision: the same
        millisecond accounting and rounding as ``ngx_http_limit_req_module.c`` (tested against a real nginx).
        ``rate`` may be nginx's own ``"5r/s"`` / ``"30r/m"``. An allowed request's ``Decision.delay_s`` is how
        long nginx would hold it (0 with ``nodelay``, or while the excess is within ``delay``); a denied one is
        nginx's 503. ``Decision.limit`` is ``burst + 1`` (nginx passes that many at once)."""
        if isinstance(rate, str):
            rate = _parse_nginx_rate(rate)
        if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
            raise InvalidRateError(f"burst must be an int >= 0, got {burst!r}")
        if nodelay and delay is not None:
            raise InvalidRateError("nodelay and delay= are exclusive (as in nginx)")
        if delay is not None and (not isinstance(delay, int) or isinstance(delay, bool) or delay < 0):
            raise InvalidRateError(f"delay must be an int >= 0, got {delay!r}")
        threshold = burst if nodelay else (delay or 0)
        return cls(
            rate,
            burst,
            mode="nginx",
            backend=backend,
            on_backend_error=on_backend_error,
            name=name,
            _nginx_delay=threshold,
        )

    def _make_params(self, rate: Rate) -> Params:
        p = super()._make_params(rate)
        if self.mode == "nginx":
            return Params(limit=p.limit - 1, period_us=p.period_us, count=p.count, mode="nginx",
                          delay=self._nginx_delay)  # fmt: skip
        return p

    def _max_cost(self, params: Params) -> int:
        return 1 if params.mode == "nginx" else params.limit


def _parse_nginx_rate(text: str) -> Rate:
    t = text.strip()
    for suffix, per_s in (("r/s", 1), ("r/m", 60)):
        if t.endswith(suffix) and t[: -len(suffix)].isdigit():
            return Rate(int(t[: -len(suffix)]), per_s=per_s)
    raise InvalidRateError(f"nginx rate must look like '5r/s' or '30r/m', got {text!r}")


class FixedWindow(Limiter[B]):
    """At most ``rate.count`` per calendar window of ``rate.per_s`` (cheap; allows 2N across a boundary)."""

    algorithm = "fixed_window"
    kind = "fixed_window"
    mode = "window"
    _step = staticmethod(algorithms.fixed_window)


class SlidingWindowLog(Limiter[B]):
    """Exact: never more than ``rate.count`` in *any* window of ``rate.per_s``. One entry per allowed decision
    (whatever its cost), at most ``rate.count`` live entries, up to 1,000,000; O(log n) per decision plus at most
    1000 expired entries trimmed (see docs/ratelimit.md, "Sliding log size limits")."""

    algorithm = "sliding_window_log"
    kind = "sliding_window_log"
    mode = "window"
    _step = staticmethod(algorithms.sliding_window_log)

    def _make_params(self, rate: Rate) -> Params:
        if self._limit_for(rate) > MAX_LOG_LIMIT:
            raise InvalidRateError(
                f"SlidingWindowLog keeps one entry per allowed request: limit {self._limit_for(rate)} is over "
                f"{MAX_LOG_LIMIT:,}; use SlidingWindowCounter (O(1) state) for limits that large"
            )
        return super()._make_params(rate)


class SlidingWindowCounter(Limiter[B]):
    """O(1) approximation of the sliding window (Cloudflare): weighted previous window + current window."""

    algorithm = "sliding_window_counter"
    kind = "sliding_window_counter"
    mode = "window"
    _step = staticmethod(algorithms.sliding_window_counter)
