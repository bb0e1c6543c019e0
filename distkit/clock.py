"""Time sources.

A :data:`Clock` is any zero-argument callable returning unix time in **milliseconds**. Primitives take
``clock=`` so tests can drive time by hand. A clock object may also offer ``sleep(seconds)``; distkit then
waits through it instead of :func:`time.sleep`, so a fake clock advances instead of blocking
(see :func:`sleeper_for`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]
Sleeper = Callable[[float], None]


def system_clock() -> int:
    """Wall-clock unix time in milliseconds."""
    return time.time_ns() // 1_000_000


def sleeper_for(clock: Clock) -> Sleeper:
    """The ``sleep(seconds)`` that matches ``clock``: its own ``sleep`` if it has one, else :func:`time.sleep`."""
    sleep = getattr(clock, "sleep", None)
    return sleep if callable(sleep) else time.sleep
