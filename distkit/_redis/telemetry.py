"""distkit's own span and metric for every Runner call (the fast path bypasses redis-py's ``execute_command``, so
hooks that wrap it, such as OTel's redis instrumentation, ddtrace or Sentry, do not see those calls).

* OpenTelemetry (``opentelemetry-api`` only; the ``distkit[otel]`` extra): once the application installs a
  tracer provider, each call is a ``CLIENT`` span ``distkit.redis <operation>`` (``db.system.name=redis``,
  ``db.operation.name``, ``distkit.redis.attempts``, error status on failure); once it installs a meter provider,
  each call is recorded in the histogram ``distkit.redis.call.duration`` (seconds) with ``db.operation.name`` and
  ``distkit.redis.outcome`` (``ok``, ``error`` for an error reply, ``unavailable``, ``circuit_open``).
* Listeners: :func:`on_call` registers a plain callback that receives a :class:`CallEvent` per call.

With neither configured a call pays two attribute reads and a list check (no span objects are made).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from distkit import _metrics

try:  # optional: distkit[otel]
    import opentelemetry.trace as _otel_trace
except ImportError:  # pragma: no cover - exercised in the no-extras install test
    _otel_trace = None  # type: ignore[assignment]


@dataclass(frozen=True)
class CallEvent:
    """One Runner call: ``operation`` is the script name (``ratelimit/token_bucket``) or the command (``TIME``)."""

    operation: str
    outcome: str  # ok | error | unavailable | circuit_open
    duration_s: float
    attempts: int
    error: BaseException | None = None


_LISTENERS: list[Callable[[CallEvent], None]] = []


def on_call(callback: Callable[[CallEvent], None]) -> Callable[[], None]:
    """Call ``callback(event)`` after every Runner call in this process; returns a function that unregisters it.
    Callbacks run on the calling thread and must be quick; their exceptions are ignored."""
    _LISTENERS.append(callback)

    def remove() -> None:
        if callback in _LISTENERS:
            _LISTENERS.remove(callback)

    return remove


def enabled() -> bool:
    """True when someone listens: a listener, or an installed OTel tracer or meter provider."""
    if _LISTENERS:
        return True
    if _otel_trace is None:
        return False
    return getattr(_otel_trace, "_TRACER_PROVIDER", None) is not None or _metrics.enabled()


_DURATION = _metrics.histogram("distkit.redis.call.duration", "s", "Duration of one distkit Redis call")


def outcome_of(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    from distkit._redis.policy import CircuitOpenError, RedisUnavailableError

    if isinstance(exc, CircuitOpenError):
        return "circuit_open"
    if isinstance(exc, RedisUnavailableError):
        return "unavailable"
    return "error"


def record(operation: str, start_ns: int, attempts: int, exc: BaseException | None) -> None:
    """Emit the span, the metric and the listener event of one finished call (call only if :func:`enabled`)."""
    end_ns = time.time_ns()
    outcome = outcome_of(exc)
    duration = max(0, end_ns - start_ns) / 1e9
    if _otel_trace is not None and getattr(_otel_trace, "_TRACER_PROVIDER", None) is not None:
        try:
            tracer = _otel_trace.get_tracer("distkit.redis")
            span = tracer.start_span(
                f"distkit.redis {operation}",
                kind=_otel_trace.SpanKind.CLIENT,
                start_time=start_ns,
                attributes={
                    "db.system.name": "redis",
                    "db.operation.name": operation,
                    "distkit.redis.attempts": attempts,
                    "distkit.redis.outcome": outcome,
                },
            )
            if exc is not None:
                span.record_exception(exc)
                span.set_status(_otel_trace.Status(_otel_trace.StatusCode.ERROR, str(exc)[:200]))
            span.end(end_time=end_ns)
        except Exception:
            pass
    if _metrics.enabled():
        try:
            _DURATION.record(duration, {"db.operation.name": operation, "distkit.redis.outcome": outcome})
        except Exception:
            pass
    if _LISTENERS:
        event = CallEvent(operation, outcome, duration, attempts, exc)
        for listener in list(_LISTENERS):
            try:
                listener(event)
            except Exception:
                pass
