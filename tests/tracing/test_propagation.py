"""Headers in and out: W3C and B3 (single/multi, lowercase), bytes and Kafka's pair lists, bad input."""

from __future__ import annotations

import doctest
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import propagate, trace

import distkit.tracing
import distkit.tracing.context
import distkit.tracing.logging
from distkit.messaging import InMemoryBroker
from distkit.tracing import (
    b3_propagator,
    extract_context,
    inject_headers,
    request_context,
    traced_handler,
    traced_producer,
    use_b3,
    use_w3c,
)


def _ids(ctx: Any) -> tuple[int, int]:
    sc = trace.get_current_span(ctx).get_span_context()
    return sc.trace_id, sc.span_id


@pytest.mark.parametrize("module", [distkit.tracing, distkit.tracing.context, distkit.tracing.logging])
def test_module_examples_run(module: Any) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("propagator", "expected"),
    [(None, {"traceparent"}), (b3_propagator(), {"b3"}),
     (b3_propagator(single_header=False), {"x-b3-traceid", "x-b3-spanid", "x-b3-sampled"})],
)
def test_round_trip_through_bytes_headers(spans: Any, propagator: Any, expected: set[str]) -> None:
    with spans.tracer.start_as_current_span("producer") as span:
        headers = inject_headers(propagator=propagator)
    assert expected <= set(headers) and all(k == k.lower() for k in headers)
    kafka_pairs = [(k, v.encode()) for k, v in headers.items()]  # what a Kafka consumer receives
    as_bytes = {k: v.encode() for k, v in headers.items()}
    for carrier in (kafka_pairs, as_bytes, {k.upper(): v for k, v in headers.items()}):
        got = _ids(extract_context(carrier, propagator=propagator))
        assert got == (span.get_span_context().trace_id, span.get_span_context().span_id)


def test_use_b3_switches_the_global_propagator_and_back(spans: Any) -> None:
    before = propagate.get_global_textmap()
    try:
        use_b3()
        with spans.tracer.start_as_current_span("p"):
            headers = inject_headers()
        assert "b3" in headers and "traceparent" not in headers
        assert _ids(extract_context(headers))[0] != 0
        use_w3c()
        with spans.tracer.start_as_current_span("p"):
            assert "traceparent" in inject_headers()
    finally:
        propagate.set_global_textmap(before)


def test_request_context_travels_as_baggage() -> None:
    with request_context(shard="db_3", user_id=42, city="Zürich"):
        headers = inject_headers({"event-id": b"e-1"})
    assert headers["event-id"] == b"e-1"  # existing bytes values are left alone
    seen: list[dict[str, Any]] = []

    @traced_handler()
    def handle(msg: Any) -> None:
        seen.append(dict(distkit.tracing.current_request_context()))

    broker = InMemoryBroker()
    broker.create_topic("t")
    traced_producer(broker.producer()).send("t", {"x": 1}, headers={"a": "b"})
    with request_context(shard="db_9"):
        traced_producer(broker.producer()).send("t", {"x": 2})
    consumer = broker.consumer("g", ["t"])
    msgs = consumer.poll_batch(10, 1.0)
    from distkit.messaging import Message

    handle(Message(topic="t", value=None, headers=headers))
    for m in msgs:
        handle(m)
    assert seen == [{"shard": "db_3", "user_id": "42", "city": "Zürich"}, {}, {"shard": "db_9"}]
    broker.close()


MALFORMED = [
    {"traceparent": "00-zzzz-1234-01"},
    {"traceparent": "00-00000000000000000000000000000000-0000000000000000-01"},
    {"traceparent": b"\xff\xfe"},
    {"b3": "not-a-b3-header"},
    {"x-b3-traceid": "xyz", "x-b3-spanid": "1"},
    {"baggage": "=,;=%%%"},
    [("traceparent", None), ("b3", 12), (None, b"x")],
    [("onlyname",)],
]


@pytest.mark.parametrize("headers", MALFORMED)
@pytest.mark.parametrize("propagator", [None, b3_propagator(), b3_propagator(single_header=False)])
def test_malformed_headers_start_a_new_root_and_never_raise(spans: Any, headers: Any, propagator: Any) -> None:
    ctx = extract_context(headers, propagator=propagator)
    assert not trace.get_current_span(ctx).get_span_context().is_valid

    @traced_handler(span_name="h", tracer_provider=spans.provider, propagator=propagator)
    def handle(msg: Any) -> str:
        return "ok"

    from distkit.messaging import Message

    pairs = headers if isinstance(headers, dict) else {}
    assert handle(Message(topic="t", headers=pairs)) == "ok"
    (span,) = spans.finished()
    assert span.parent is None and not span.links


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["traceparent", "tracestate", "b3", "baggage", "x-b3-traceid", "X-B3-SpanId"]),
                       st.one_of(st.text(max_size=80), st.binary(max_size=80))))
def test_any_header_values_never_raise(headers: dict[str, Any]) -> None:
    for propagator in (None, b3_propagator(), b3_propagator(single_header=False)):
        extract_context(headers, propagator=propagator)


def test_batch_handler_gets_one_link_per_message(spans: Any) -> None:
    from distkit.messaging import Message

    batch = []
    producers = []
    for i in range(3):
        with spans.tracer.start_as_current_span(f"produce-{i}") as p:
            producers.append(p.get_span_context().span_id)
            batch.append(Message(topic="t", value=i, headers=dict(inject_headers())))

    @traced_handler(tracer_provider=spans.provider)
    def handle(msgs: list[Message]) -> int:
        return len(msgs)

    with spans.tracer.start_as_current_span("poll-loop") as loop:
        assert handle(batch) == 3
    span = spans.by_name("process batch")
    assert [ln.context.span_id for ln in span.links] == producers
    assert span.parent.span_id == loop.get_span_context().span_id  # parented on the current context
    assert span.attributes["messaging.batch.message_count"] == 3


async def test_async_handler_is_a_child_and_records_errors(spans: Any) -> None:
    from distkit.messaging import Message

    with spans.tracer.start_as_current_span("produce") as p:
        msg = Message(topic="orders", value=1, headers=dict(inject_headers()), partition=2, offset=17)

    @traced_handler(tracer_provider=spans.provider, link=False)
    async def handle(m: Message) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await handle(msg)
    span = spans.by_name("process orders")
    assert span.parent.span_id == p.get_span_context().span_id and not span.links
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["messaging.kafka.message.offset"] == 17
    assert span.attributes["messaging.destination.partition.id"] == "2"


def test_without_an_sdk_nothing_is_recorded_but_context_still_travels() -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # the suite never sets a global SDK
    from distkit.messaging import Message

    with request_context(shard="s1"):
        headers = inject_headers()
    assert "traceparent" not in headers and headers["baggage"] == "shard=s1"

    @traced_handler()
    def handle(m: Message) -> Any:
        return dict(distkit.tracing.current_request_context()), trace.get_current_span().get_span_context().is_valid

    assert handle(Message(topic="t", headers=headers)) == ({"shard": "s1"}, False)


def test_a_globally_installed_sdk_is_picked_up_without_configuration() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from distkit.messaging import Message
from distkit.tracing import inject_headers, traced_handler

@traced_handler(span_name="h")
def handle(m): return 1

handle(Message(topic="t"))            # before the SDK: nothing recorded, nothing raised
exporter = InMemorySpanExporter()
provider = TracerProvider(); provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
with trace.get_tracer("app").start_as_current_span("p") as p:
    headers = inject_headers()
handle(Message(topic="t", headers=headers))
(span,) = [s for s in exporter.get_finished_spans() if s.name == "h"]
assert span.parent.span_id == p.get_span_context().span_id
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
