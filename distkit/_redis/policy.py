"""The call policy every distkit Redis call follows: a deadline, the client's retry budget, a per-client breaker.

* **Deadline.** Every call has one (an absolute ``time.monotonic()`` value); it returns or raises by then.
* **Retries.** distkit's own, never redis-py's: at most as many resends as the connection's ``Retry`` allows
  (``Retry(NoBackoff(), 0)``: none), sleeping the client's backoff, and never past the deadline (a retry whose
  backoff would end after the deadline is not made; the call raises at once).
* **Breaker.** One per client pool (shared by every Runner on it, sync or asyncio): after ``threshold``
  consecutive failed attempts, calls fail in microseconds with :class:`CircuitOpenError` for a back-off interval
  (exponential from ``base_s`` up to ``cap_s``, jittered to 50-100 %), then one call probes the server; a success
  closes the breaker, a failure opens it again for the next interval.
* **Errors.** Outages raise :class:`RedisUnavailableError`, which derives from both
  :class:`distkit.errors.BackendUnavailableError` and ``redis.exceptions.ConnectionError`` (so code that catches
  either keeps working); the cause is chained. Error replies (``ResponseError``) and ``AuthenticationError`` are
  not outages and pass through unchanged.
"""

from __future__ import annotations

import os
import random
import threading
import weakref
from typing import Any

from redis.exceptions import AuthenticationError, MaxConnectionsError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from distkit.errors import BackendUnavailableError

OUTAGE_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
"""What counts as an outage: connection refused/reset/closed, timeouts (redis-py's and the socket's)."""

NOT_OUTAGES: tuple[type[BaseException], ...] = (AuthenticationError,)
"""``ConnectionError`` subclasses that are a configuration problem, not an outage: raised unchanged."""


class RedisUnavailableError(BackendUnavailableError, RedisConnectionError):
    """Redis could not be reached by the call's deadline (refused, reset, timed out, pool exhausted).

    A :class:`~distkit.errors.BackendUnavailableError` for distkit's failure policies and, for code written
    against redis-py, a ``redis.exceptions.ConnectionError``. The last underlying error is ``__cause__``.
    ``attempts`` says how many times the call was tried."""

    def __init__(self, message: str, *, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts


class CircuitOpenError(RedisUnavailableError):
    """The client's outage breaker is open: the call was not sent (it costs microseconds, not a timeout)."""


class PoolExhaustedError(RedisUnavailableError):
    """No connection of the client's pool was free by the deadline (``max_connections`` reached)."""


def unavailable(what: str, exc: BaseException | None, attempts: int) -> RedisUnavailableError:
    detail = f": {exc.__class__.__name__}: {exc}" if exc is not None else ""
    err = RedisUnavailableError(f"Redis unavailable for {what} after {attempts} attempt(s){detail}", attempts=attempts)
    err.__cause__ = exc
    return err


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, OUTAGE_ERRORS) and not isinstance(exc, (*NOT_OUTAGES, MaxConnectionsError))


def retry_budget(retry: Any) -> tuple[int, Any, tuple[type[BaseException], ...]]:
    """(resends allowed, backoff, retryable errors) of a redis-py ``Retry`` (``None``: no resend).
    A negative count (redis-py's "forever") means: until the deadline."""
    if retry is None:
        return 0, None, ()
    retries = retry.get_retries() if hasattr(retry, "get_retries") else getattr(retry, "_retries", 0)
    if retries < 0:
        retries = 1 << 30
    return retries, getattr(retry, "_backoff", None), tuple(getattr(retry, "_supported_errors", OUTAGE_ERRORS))


def backoff_s(backoff: Any, failures: int) -> float:
    if backoff is None:
        return 0.0
    try:
        return max(0.0, float(backoff.compute(failures)))
    except Exception:  # a custom backoff that fails: do not let it turn an outage into a crash
        return 0.0


class Breaker:
    """Per-client outage breaker (see the module docstring). Thread-safe and asyncio-safe (no awaits under its
    lock); reset in a forked child. The closed state costs one attribute read per call."""

    __slots__ = (
        "__weakref__",
        "_lock",
        "base_s",
        "cap_s",
        "failures",
        "open_until",
        "opens",
        "probe_until",
        "threshold",
    )

    def __init__(self, *, threshold: int = 3, base_s: float = 0.05, cap_s: float = 5.0) -> None:
        self.threshold = threshold
        self.base_s = base_s
        self.cap_s = cap_s
        self._reset()
        _BREAKERS.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self.failures = 0
        self.opens = 0
        self.open_until = 0.0  # 0.0: closed; else open (or half-open once the time has passed)
        self.probe_until = 0.0  # while a probe is in flight, other calls keep failing fast

    def configure(
        self, *, threshold: int | None = None, base_s: float | None = None, cap_s: float | None = None
    ) -> None:
        if threshold is not None:
            self.threshold = max(1, threshold)
        if base_s is not None:
            self.base_s = base_s
        if cap_s is not None:
            self.cap_s = cap_s

    @property
    def is_open(self) -> bool:
        return self.open_until != 0.0

    def before(self, now: float, deadline: float) -> None:
        """Raise :class:`CircuitOpenError` while open; past the interval, let exactly one call through as the
        probe (until its deadline; then another call may probe)."""
        if not self.open_until:
            return
        with self._lock:
            if not self.open_until:
                return
            if now < self.open_until:
                raise CircuitOpenError(
                    f"Redis outage breaker open for another {self.open_until - now:.3f} s "
                    f"(after {self.failures} consecutive failures); not sent"
                )
            if now < self.probe_until:
                raise CircuitOpenError("Redis outage breaker half-open: another call is probing the server; not sent")
            self.probe_until = deadline

    def succeeded(self) -> None:
        if self.failures or self.open_until:
            with self._lock:
                self.failures = 0
                self.opens = 0
                self.open_until = 0.0
                self.probe_until = 0.0

    def failed(self, now: float) -> None:
        with self._lock:
            self.failures += 1
            if self.failures < self.threshold:
                return
            if self.open_until and now < self.open_until:
                return  # already open: concurrent failures of calls sent before it opened do not extend it
            self.opens += 1
            interval = min(self.cap_s, self.base_s * (2 ** min(self.opens - 1, 30)))
            self.open_until = now + interval * (0.5 + random.random() / 2)
            self.probe_until = 0.0

    def is_failing_fast(self, now: float) -> bool:
        """True while open and not yet due for a probe (a retry loop stops here instead of sleeping)."""
        return bool(self.open_until) and now < self.open_until


_BREAKERS: weakref.WeakSet[Breaker] = weakref.WeakSet()
_BY_OWNER: weakref.WeakKeyDictionary[Any, Breaker] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def breaker_for(owner: Any) -> Breaker:
    """The breaker of a client's pool (plain clients) or of the client itself (Cluster, test doubles): every
    Runner on the same pool shares it."""
    pool = getattr(owner, "connection_pool", None)
    key = pool if pool is not None else owner
    try:
        found: Breaker | None = _BY_OWNER.get(key)
    except TypeError:  # unhashable or not weak-referenceable: one breaker per Runner
        return Breaker()
    if found is not None:
        return found
    with _REGISTRY_LOCK:
        found = _BY_OWNER.get(key)
        if found is None:
            found = Breaker()
            try:
                _BY_OWNER[key] = found
            except TypeError:
                pass
        return found


def _reset_in_child() -> None:
    for breaker in list(_BREAKERS):
        breaker._reset()  # a lock held by a parent thread at fork would never be released in the child
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_in_child)
