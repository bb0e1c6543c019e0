"""Spans for Kafka handlers and producers that keep ONE trace from the producer to the consumer.

OpenTelemetry's confluent-kafka instrumentation starts every consumer span in a new trace with only a link
to the producer, so a request can't be followed end to end. :func:`traced_handler` makes the span of a
message processed on its own a **child** of the producer's span (same trace id) and also records the link
(the semantic conventions' form); both are switchable. A batch handler (it receives a list of messages) gets
one span with a link per message, parented on the current context, as the conventions' batch rule says.

With no OpenTelemetry SDK configured the wrappers skip span work entirely (a type check per call); only
request context carried as baggage is still restored, so DB routing works without tracing.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TypeVar, cast

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from distkit.tracing.context import request_context
from distkit.tracing.propagation import extract_context, inject_headers
from distkit.tracing.spans import tracer_for as _tracer

F = TypeVar("F", bound=Callable[..., Any])


def _headers_of(msg: Any) -> Any:
    h = getattr(msg, "headers", None)
    return h() if callable(h) else h  # confluent-kafka's Message.headers() or distkit's Message.headers


def _field(msg: Any, name: str) -> Any:
    v = getattr(msg, name, None)
    return v() if callable(v) else v


def _message_attributes(msg: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {"messaging.system": "kafka", "messaging.operation.type": "process"}
    topic, partition, offset = _field(msg, "topic"), _field(msg, "partition"), _field(msg, "offset")
    if isinstance(topic, str):
        attrs["messaging.destination.name"] = topic
    if isinstance(partition, int):
        attrs["messaging.destination.partition.id"] = str(partition)
    if isinstance(offset, int):
        attrs["messaging.kafka.message.offset"] = offset
    return attrs


def _baggage_values(ctx: otel_context.Context) -> dict[str, str]:
    return {k: str(v) for k, v in baggage.get_all(ctx).items() if k.isidentifier() and k.isascii()}


@contextmanager
def _consume_scope(
    args: tuple[Any, ...],
    span_name: str | None,
    tracer: trace.Tracer | None,
    propagator: TextMapPropagator | None,
    parent: bool,
    link: bool,
) -> Iterator[None]:
    first = args[0] if args else None
    batch = isinstance(first, Sequence) and not isinstance(first, str | bytes)
    messages: Sequence[Any] = cast(Sequence[Any], first) if batch else ([first] if first is not None else [])
    contexts = [extract_context(_headers_of(m), propagator=propagator) for m in messages]
    values = _baggage_values(contexts[0]) if len(contexts) == 1 else {}
    if tracer is None:
        with request_context(**values):
            yield
        return
    links = []
    if link or batch:
        for ctx in contexts:
            sc = trace.get_current_span(ctx).get_span_context()
            if sc.is_valid:
                links.append(Link(sc, {"messaging.operation.type": "publish"}))
    if batch:
        name = span_name or "process batch"
        attrs: dict[str, Any] = {"messaging.system": "kafka", "messaging.batch.message_count": len(messages)}
        parent_ctx: otel_context.Context | None = None
    else:
        name = span_name or f"process {_message_attributes(first).get('messaging.destination.name', '')}".strip()
        attrs = _message_attributes(first) if first is not None else {}
        parent_ctx = contexts[0] if parent and contexts else None
    with (
        request_context(**values),
        tracer.start_as_current_span(
            name, context=parent_ctx, kind=SpanKind.CONSUMER, links=links, attributes=attrs
        ) as span,
    ):
        try:
            yield
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def _baggage_header(args: tuple[Any, ...]) -> Any:
    """The raw ``baggage`` header of a single-message call, or ``None`` (the cheap check of the no-SDK path)."""
    if not args:
        return None
    headers = _headers_of(args[0])
    if not headers:
        return None
    if isinstance(headers, dict):
        return headers.get("baggage") or headers.get("Baggage")
    if isinstance(headers, list | tuple):
        return next((v for k, v in headers if isinstance(k, str) and k.lower() == "baggage"), None)
    return None


def traced_handler(
    span_name: str | None = None,
    *,
    parent: bool = True,
    link: bool = True,
    tracer_provider: trace.TracerProvider | None = None,
    propagator: TextMapPropagator | None = None,
) -> Callable[[F], F]:
    """Wrap a message handler (sync or ``async``; its first argument a message or a list of messages) in a
    CONSUMER span whose parent is the producer's span (``parent=True``) and which links to it (``link=True``).
    Request context carried as baggage is restored for the handler's duration."""

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                tracer = _tracer(tracer_provider)
                if tracer is None and _baggage_header(args) is None:
                    return await cast(Callable[..., Awaitable[Any]], fn)(*args, **kwargs)  # nothing to do
                with _consume_scope(args, span_name, tracer, propagator, parent, link):
                    return await cast(Callable[..., Awaitable[Any]], fn)(*args, **kwargs)

            async_wrapper.__distkit_traced__ = True  # type: ignore[attr-defined]
            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            tracer = _tracer(tracer_provider)
            if tracer is None and _baggage_header(args) is None:
                return fn(*args, **kwargs)  # no SDK and no request context to restore: nothing to do
            with _consume_scope(args, span_name, tracer, propagator, parent, link):
                return fn(*args, **kwargs)

        wrapper.__distkit_traced__ = True  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


class TracedProducer:
    """A producer whose ``send`` runs in a PRODUCER span and carries it (and the request context) in the
    message headers. Everything else (``flush``, ``begin``/``commit``, ``send_offsets`` ...) is the wrapped
    producer's own."""

    def __init__(
        self,
        producer: Any,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self._producer = producer
        self._provider = tracer_provider
        self._propagator = propagator

    def send(
        self,
        topic: str,
        value: Any = None,
        *,
        key: bytes | str | int | None = None,
        headers: Mapping[str, str | bytes] | None = None,
        partition: int | None = None,
    ) -> None:
        out: dict[str, Any] = dict(headers or {})
        tracer = _tracer(self._provider)
        if tracer is None:
            inject_headers(out, propagator=self._propagator)  # baggage (request context) still travels
            self._producer.send(topic, value, key=key, headers=out, partition=partition)
            return
        attrs = {"messaging.system": "kafka", "messaging.destination.name": topic, "messaging.operation.type": "send"}
        with tracer.start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER, attributes=attrs) as span:
            inject_headers(out, propagator=self._propagator)
            try:
                self._producer.send(topic, value, key=key, headers=out, partition=partition)
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise

    def send_message(self, message: Any) -> None:
        self.send(message.topic, message.value, key=message.key, headers=message.headers, partition=message.partition)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)

    def __enter__(self) -> TracedProducer:
        self._producer.__enter__()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._producer.__exit__(et, ev, tb)


def traced_producer(
    producer: Any,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    propagator: TextMapPropagator | None = None,
) -> TracedProducer:
    """Wrap a distkit producer (plain or transactional) so each ``send`` is traced and carries the context."""
    return TracedProducer(producer, tracer_provider=tracer_provider, propagator=propagator)
