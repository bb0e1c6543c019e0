"""Re-export of :mod:`distkit._otel` (the tracer lookup every module shares) for tracing's own modules."""

from distkit._otel import add_event, needs_propagation, tracer_for

__all__ = ["add_event", "needs_propagation", "tracer_for"]
