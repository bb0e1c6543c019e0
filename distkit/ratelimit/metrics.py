"""OpenTelemetry counter ``distkit.ratelimit.decisions{limiter, allowed, policy}``; a no-op without a meter provider."""

from __future__ import annotations

from typing import Any

from distkit import _metrics

_DECISIONS = _metrics.counter("distkit.ratelimit.decisions", "1", "rate-limit decisions by outcome")


class DecisionMetrics:
    """One limiter's recorder. The attribute sets are built once per (allowed, policy), so counting a decision
    costs one dict lookup and the counter's ``add``; without a meter provider, one cheap check."""

    __slots__ = ("_attrs", "_limiter")

    def __init__(self, limiter: str) -> None:
        self._limiter = limiter
        self._attrs: dict[tuple[bool, str], dict[str, Any]] = {}

    def record(self, allowed: bool, policy: str, n: int = 1) -> None:
        """``policy`` is the FailurePolicy value that answered, or "" when the backend did; ``n`` decisions."""
        if n == 0 or not _metrics.enabled():
            return
        attrs = self._attrs.get((allowed, policy))
        if attrs is None:
            attrs = {"limiter": self._limiter, "allowed": allowed, "policy": policy or "backend"}
            self._attrs[(allowed, policy)] = attrs
        _DECISIONS.add(n, attrs)
