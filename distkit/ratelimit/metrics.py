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


def record_decision(limiter: str, decision: Any) -> None:
    counter = _get_counter()
    if counter is not None:
        counter.add(
            1, {"limiter": limiter, "allowed": bool(decision.allowed), "policy": decision.fallback or "backend"}
        )
