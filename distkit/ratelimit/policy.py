"""What a Redis-backed limiter does when Redis cannot answer."""

from __future__ import annotations

import enum


class FailurePolicy(enum.Enum):
    """``FAIL_OPEN``: allow (Stripe's choice: an outage of the limiter must not become an outage of the API).
    ``FAIL_CLOSED``: deny (protects a fragile downstream). ``LOCAL_FALLBACK``: decide with the same limiter
    on a per-process :class:`~distkit.ratelimit.MemoryBackend` until Redis is back (limits become per process).
    Decisions made by a policy carry ``Decision.fallback`` and are counted in metrics with ``policy``."""

    FAIL_OPEN = "fail_open"
    FAIL_CLOSED = "fail_closed"
    LOCAL_FALLBACK = "local_fallback"
    RAISE = "raise"  # propagate the backend error (as distkit.errors.BackendUnavailableError)
