"""A consumer in another process: reads ``count`` messages with a traced handler, writes each to PostgreSQL in
a ``db.insert`` span (and to the shard its baggage names), then prints its finished spans as JSON lines.

``python -m tests.tracing._consumer BOOTSTRAP TOPIC GROUP COUNT DB_URL TABLE w3c|b3``
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import create_engine, text

from distkit.messaging import KafkaBroker
from distkit.tracing import b3_propagator, current_request_context, traced_handler


def main(bootstrap: str, topic: str, group: str, count: int, db_url: str, table: str, fmt: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("consumer")
    propagator = b3_propagator() if fmt == "b3" else None
    engine = create_engine(db_url)

    @traced_handler(span_name="order.consume", tracer_provider=provider, propagator=propagator)
    def handle(msg: Any) -> None:
        with tracer.start_as_current_span("db.insert"), engine.begin() as conn:
            conn.execute(
                text(f"INSERT INTO {table} (order_id, shard) VALUES (:o, :s)"),
                {"o": msg.value["order_id"], "s": current_request_context().get("shard", "")},
            )

    broker = KafkaBroker(bootstrap, timeout_s=15)
    consumer = broker.consumer(group, [topic])
    seen = 0
    deadline = time.monotonic() + 60
    while seen < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        handle(msg)
        consumer.commit(msg)
        seen += 1
    consumer.close()
    broker.close()
    for s in exporter.get_finished_spans():
        print(
            json.dumps(
                {
                    "name": s.name,
                    "trace_id": s.context.trace_id,
                    "span_id": s.context.span_id,
                    "parent_id": s.parent.span_id if s.parent else None,
                    "links": [ln.context.span_id for ln in s.links],
                    "kind": s.kind.name,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], a[2], int(a[3]), a[4], a[5], a[6])
