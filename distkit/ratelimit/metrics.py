"""OpenTelemetry counter ``distkit.ratelimit.decisions{limiter, allowed, policy}``; a no-op without opentelemetry."""

from __future__ import annotations

from typing import Any

_counter: Any = None
_tried = False


def _get_counter() -> Any:
    global _counter, _tried
    if not _tried:
        _tried = True
        try:
            from opentelemetry import metrics

            _counter = metrics.get_meter("distkit.ratelimit").create_counter(
                "distkit.ratelimit.decisions", unit="1", description="rate-limit decisions by outcome"
            )
        except ImportError:  # pragma: no cover - otel extra not installed
            _counter = None
    return _counter


class DecisionMetrics:
    """One limiter's recorder. The attribute sets are built once per (allowed, policy), so counting a decision
    costs one dict lookup and the counter's ``add`` (a no-op until an SDK is installed)."""

    __slots__ = ("_attrs", "_counter", "_limiter")

    def __init__(self, limiter: str) -> None:
        self._limiter = limiter
        self._counter = _get_counter()
        self._attrs: dict[tuple[bool, str], dict[str, Any]] = {}

    def record(self, allowed: bool, policy: str, n: int = 1) -> None:
        """``policy`` is the FailurePolicy value that answered, or "" when the backend did; ``n`` decisions."""
        if self._counter is None or n == 0:
            return
        attrs = self._attrs.get((allowed, policy))
        if attrs is None:
            attrs = {"limiter": self._limiter, "allowed": allowed, "policy": policy or "backend"}
            self._attrs[(allowed, policy)] = attrs
        self._counter.add(n, attrs)
