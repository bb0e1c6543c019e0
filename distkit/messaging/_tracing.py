"""How messaging meets distkit.tracing: producers add trace headers (and the request context as baggage) when
there is a trace or a request context to carry; processors run handlers in a consumer span that continues the
producer's trace. Both cost a context lookup when there is nothing to do."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from distkit._otel import needs_propagation

_TRACE_HEADERS = ("traceparent", "b3", "x-b3-traceid")


def with_trace_headers(headers: Mapping[str, str | bytes] | None) -> Mapping[str, str | bytes] | None:
    """``headers`` plus the current trace context, or ``headers`` itself when there is none (or when the caller
    already set trace headers: theirs win)."""
    if not needs_propagation():
        return headers
    if headers and any(h in headers for h in _TRACE_HEADERS):
        return headers
    from distkit.tracing.propagation import inject_headers

    out: dict[str, Any] = dict(headers or {})
    inject_headers(out)
    return out


def traced(handler: Callable[..., Any]) -> Callable[..., Any]:
    """The handler wrapped by :func:`distkit.tracing.traced_handler`, unless it already is."""
    if getattr(handler, "__distkit_traced__", False):
        return handler
    try:
        from distkit.tracing.kafka import traced_handler
    except ImportError:  # pragma: no cover - no opentelemetry-api (a --no-deps install): nothing to trace with
        return handler

    wrapped = traced_handler()(handler)
    wrapped.__distkit_traced__ = True  # type: ignore[attr-defined]
    return wrapped
