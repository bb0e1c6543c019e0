"""Overhead of distkit.tracing's handler wrapper: undecorated vs no SDK configured vs SDK + in-memory exporter."""

from __future__ import annotations

from typing import Any

from bench._table import Row, best_rates, print_table


def main() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from distkit.messaging import Message
    from distkit.tracing import inject_headers, traced_handler

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("bench").start_as_current_span("producer"):
        traced_msg = Message(topic="orders", value=1, headers=dict(inject_headers()), partition=0, offset=1)
    plain_msg = Message(topic="orders", value=1, headers={"event-id": "e-1"}, partition=0, offset=1)

    def handle(msg: Any) -> int:
        return 1

    no_sdk = traced_handler()(handle)
    with_sdk = traced_handler(tracer_provider=provider)(handle)

    def sdk_call() -> None:
        with_sdk(traced_msg)
        if len(exporter._finished_spans) > 10_000:  # keep memory flat during the run
            exporter.clear()

    rates = best_rates(
        [
            ("undecorated", lambda: handle(plain_msg)),
            ("traced_handler, no SDK, no trace headers", lambda: no_sdk(plain_msg)),
            ("traced_handler, no SDK, traceparent header", lambda: no_sdk(traced_msg)),
            ("traced_handler, SDK + in-memory exporter", sdk_call),
        ]
    )
    base = rates["undecorated"]
    rows = [
        Row("handler call", name, r, note="" if name == "undecorated" else f"{(1 / r - 1 / base) * 1e6:.2f} us extra")
        for name, r in rates.items()
    ]
    print_table("distkit.tracing: per-call cost of traced_handler", rows)
