"""The one place distkit asks OpenTelemetry for a tracer, and learns cheaply that there is none."""

from __future__ import annotations

import os

from opentelemetry import trace

_INSTRUMENTATION = "distkit"
_NO_SDK = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_TRACERS: dict[int, tuple[trace.TracerProvider, trace.Tracer]] = {}


_UNKNOWN = object()
_ENV_PROVIDER = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def tracer_for(provider: trace.TracerProvider | None) -> trace.Tracer | None:
    """The tracer to use, or ``None`` when no SDK is configured (the no-op fast path).

    ``trace.get_tracer_provider()`` looks at ``os.environ`` on every call while no provider is set (~1.3 us);
    reading OpenTelemetry's global slot first keeps the no-SDK path well under a microsecond."""
    if provider is None:
        slot = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
        if slot is None and not _ENV_PROVIDER:
            return None
    tp = provider if provider is not None else trace.get_tracer_provider()
    if isinstance(tp, _NO_SDK):
        return None
    hit = _TRACERS.get(id(tp))
    if hit is None or hit[0] is not tp:
        hit = (tp, tp.get_tracer(_INSTRUMENTATION))
        if len(_TRACERS) > 64:
            _TRACERS.clear()
        _TRACERS[id(tp)] = hit
    return hit[1]


