"""``@degrade``: turn the named exceptions (an open breaker, a full bulkhead, a rate limit) into a fallback call."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from distkit.errors import BreakerOpenError, BulkheadFullError, InvalidArgumentError, RateLimitExceeded
from distkit.resilience.metrics import EventHook, Recorder

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_ON: tuple[type[BaseException], ...] = (BreakerOpenError, BulkheadFullError, RateLimitExceeded)


def degrade(
    fallback: Callable[..., Any],
    *,
    on: tuple[type[BaseException], ...] = DEFAULT_ON,
    on_event: EventHook | None = None,
) -> Callable[[F], F]:
    """When the decorated function raises one of ``on``, return ``fallback(*args, **kwargs)`` instead (Sentinel's
    ``blockHandler``); other exceptions propagate. Works on sync and ``async def`` functions; an async function's
    fallback may be sync or async. Put it outermost::

        @degrade(fallback=lambda order: cached_quote(), on=(BreakerOpenError, BulkheadFullError, RateLimitExceeded))
        @breaker
        @bulkhead
        def call_payment_api(order): ...

    Each fallback is counted (``distkit.resilience.fallbacks``) and reported to ``on_event``."""
    if not callable(fallback):
        raise InvalidArgumentError(f"degrade needs a callable fallback, got {fallback!r}")
    if not isinstance(on, tuple) or not all(isinstance(e, type) and issubclass(e, BaseException) for e in on):
        raise InvalidArgumentError(f"degrade(on=...) must be a tuple of exception types, got {on!r}")

    def decorate(fn: F) -> F:
        events = Recorder(getattr(fn, "__qualname__", repr(fn)), "degrade", on_event)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def acall(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await fn(*args, **kwargs)
                except on as exc:
                    events.fallback(type(exc).__name__, time.time_ns() // 1_000_000)
                result = fallback(*args, **kwargs)
                return await result if inspect.isawaitable(result) else result

            return cast(F, acall)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except on as exc:
                events.fallback(type(exc).__name__, time.time_ns() // 1_000_000)
            return fallback(*args, **kwargs)

        return cast(F, call)

    return decorate
