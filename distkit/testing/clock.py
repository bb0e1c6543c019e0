"""A hand-driven clock for tests (unix milliseconds), accepted by every ``clock=`` parameter.

``sleep(seconds)`` advances the clock instead of blocking, so code that waits for time to pass (rollback
waits, sequence exhaustion, rate-limit ``wait``) runs instantly and deterministically.
"""

from __future__ import annotations

import threading


class FakeClock:
    """Unix milliseconds that move only when told to (``advance``, ``set``) or when the code under test sleeps."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = int(start_ms)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def __call__(self) -> int:
        with self._lock:
            return self._now

    def now(self) -> int:
        return self()

    def advance(self, ms: int | float) -> int:
        """Move forward by ``ms``; the new time."""
        with self._lock:
            self._now += int(ms)
            return self._now

    def set(self, ms: int) -> None:
        """Jump to ``ms`` (backwards too: that is how rollback tests simulate an NTP step)."""
        with self._lock:
            self._now = int(ms)

    def sleep(self, seconds: float) -> None:
        """Record the call and advance instead of blocking (at least 1 ms for any positive wait)."""
        self.sleeps.append(seconds)
        self.advance(max(1, round(seconds * 1000)) if seconds > 0 else 0)
