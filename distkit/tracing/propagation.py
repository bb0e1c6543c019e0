"""Trace context in and out of HTTP and Kafka headers, with OpenTelemetry's maintained propagators.

W3C ``traceparent``/``tracestate`` + ``baggage`` by default (OpenTelemetry's global propagator, which
``OTEL_PROPAGATORS`` configures); :func:`use_b3` switches to B3 from ``opentelemetry-propagator-b3`` (single
``b3`` header or multi ``x-b3-*`` headers, lowercase — as Kafka needs). Every function also takes an explicit
``propagator=``. Carriers may be dicts of ``str``/``bytes`` values or Kafka's list of ``(name, bytes)`` pairs;
header names are matched case-insensitively. A malformed header never raises: the context is left without a
parent, so the next span starts a new trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from opentelemetry import baggage, propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, get_current
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from distkit.tracing.context import current_request_context

Carrier = Mapping[str, Any] | Iterable[tuple[str, Any]] | None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def _as_lower_dict(carrier: Carrier) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if not carrier:
        return out
    items = carrier.items() if isinstance(carrier, Mapping) else carrier
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            continue
        text = _text(value)
        if isinstance(name, str) and text is not None:
            out.setdefault(name.lower(), []).append(text)
    return out


class _LowerGetter(Getter[dict[str, list[str]]]):
    def get(self, carrier: dict[str, list[str]], key: str) -> list[str] | None:
        return carrier.get(key.lower())

    def keys(self, carrier: dict[str, list[str]]) -> list[str]:
        return list(carrier)


_GETTER = _LowerGetter()
W3C = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


def b3_propagator(*, single_header: bool = True) -> TextMapPropagator:
    """B3 (single ``b3`` header, or ``x-b3-*`` when ``single_header=False``) plus W3C ``baggage``."""
    try:
        from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("B3 propagation needs opentelemetry-propagator-b3: pip install 'distkit[otel]'") from exc

    fmt: TextMapPropagator = B3SingleFormat() if single_header else B3MultiFormat()
    return CompositePropagator([fmt, W3CBaggagePropagator()])


def use_b3(*, single_header: bool = True) -> TextMapPropagator:
    """Make B3 (+ baggage) OpenTelemetry's global propagator — what every OpenTelemetry instrumentation and
    distkit use when no ``propagator=`` is passed. Returns it. :func:`use_w3c` switches back."""
    prop = b3_propagator(single_header=single_header)
    propagate.set_global_textmap(prop)
    return prop


def use_w3c() -> TextMapPropagator:
    """Make W3C trace context + baggage the global propagator again (OpenTelemetry's default)."""
    propagate.set_global_textmap(W3C)
    return W3C


def _with_request_baggage(ctx: Context) -> Context:
    for name, value in current_request_context().items():
        ctx = baggage.set_baggage(name, str(value), context=ctx)
    return ctx


def inject_headers(
    headers: MutableMapping[str, Any] | None = None,
    *,
    context: Context | None = None,
    propagator: TextMapPropagator | None = None,
) -> MutableMapping[str, Any]:
    """Write the current (or ``context``'s) span and the request context (as baggage) into ``headers`` and
    return it (a new dict when ``None``). Values are ``str``; existing ``bytes`` values are left alone."""
    carrier: MutableMapping[str, Any] = {} if headers is None else headers
    ctx = _with_request_baggage(context if context is not None else get_current())
    (propagator or propagate.get_global_textmap()).inject(carrier, context=ctx)
    return carrier


def extract_context(
    headers: Carrier, *, context: Context | None = None, propagator: TextMapPropagator | None = None
) -> Context:
    """The OpenTelemetry context carried by ``headers`` (HTTP or Kafka, bytes or text). Malformed or missing
    headers give a context without a remote parent (a new root trace); this never raises."""
    base = context if context is not None else Context()
    carrier = _as_lower_dict(headers)
    if not carrier:
        return base
    try:
        return (propagator or propagate.get_global_textmap()).extract(carrier, context=base, getter=_GETTER)
    except Exception:  # a propagator must never break the consumer path on someone else's bad header
        return base
