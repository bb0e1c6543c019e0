"""``@qps_limit``: rate-limit a function (sync or async) per key, with an optional fallback."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

from distkit.errors import RateLimitExceeded

F = TypeVar("F", bound=Callable[..., Any])


def qps_limit(
    limiter: Any, *, key: Callable[..., str] | str = "global", cost: int = 1, fallback: Callable[..., Any] | None = None
) -> Callable[[F], F]:
    """Allow calls while ``limiter`` allows ``key``; otherwise return ``fallback(*args)`` (degrade, Sentinel
    style) or raise :class:`~distkit.errors.RateLimitExceeded` carrying the decision.

    >>> @qps_limit(limiter, key=lambda req: req.user_id, fallback=lambda req: cached_page)  # doctest: +SKIP
    ... def handle(req): ...
    """

    def key_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return key(*args, **kwargs) if callable(key) else key

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def acall(*args: Any, **kwargs: Any) -> Any:
                decision = limiter.acquire(key_of(args, kwargs), cost)
                if inspect.isawaitable(decision):
                    decision = await decision
                if decision.allowed:
                    return await fn(*args, **kwargs)
                if fallback is None:
                    raise RateLimitExceeded(decision)
                result = fallback(*args, **kwargs)
                return await result if inspect.isawaitable(result) else result

            return cast(F, acall)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            decision = limiter.acquire(key_of(args, kwargs), cost)
            if decision.allowed:
                return fn(*args, **kwargs)
            if fallback is None:
                raise RateLimitExceeded(decision)
            return fallback(*args, **kwargs)

        return cast(F, call)

    return decorate
