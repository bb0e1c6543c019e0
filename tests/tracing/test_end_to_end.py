"""One trace from an HTTP client, through a service, Kafka and a consumer in another process, to a DB write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from distkit.tracing import b3_propagator, extract_context, inject_headers, request_context, traced_producer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def orders_table(database_url: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text

    table = f"orders_{uuid.uuid4().hex[:8]}"
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (order_id int PRIMARY KEY, shard text)"))
    yield table
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {table}"))
    engine.dispose()


def _serve(spans: Any, broker: Any, topic: str, propagator: Any) -> ThreadingHTTPServer:
    producer = traced_producer(broker.producer(), tracer_provider=spans.provider, propagator=propagator)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            ctx = extract_context(dict(self.headers.items()), propagator=propagator)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with (
                spans.tracer.start_as_current_span("POST /orders", context=ctx, kind=SpanKind.SERVER),
                request_context(shard=body["shard"]),
                spans.tracer.start_as_current_span("order.service"),
            ):
                producer.send(topic, {"order_id": body["order_id"]}, key=str(body["order_id"]))
                producer.flush(10)
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("fmt", ["w3c", "b3"])
def test_http_service_kafka_consumer_db_is_one_trace(
    fmt: str, spans: Any, kafka_bootstrap: str, new_topic: Any, database_url: str, orders_table: str
) -> None:
    from distkit.messaging import KafkaBroker

    propagator = b3_propagator() if fmt == "b3" else None
    topic = new_topic()
    broker = KafkaBroker(kafka_bootstrap, timeout_s=15)
    server = _serve(spans, broker, topic, propagator)
    try:
        with spans.tracer.start_as_current_span("client.checkout", kind=SpanKind.CLIENT):
            headers = inject_headers({"Content-Type": "application/json"}, propagator=propagator)
            if fmt == "b3":
                assert "b3" in headers and "traceparent" not in headers
            req = urllib.request.Request(
                f"http://127.0.0.1:{server.server_port}/orders",
                data=json.dumps({"order_id": 7, "shard": "db_3"}).encode(),
                headers=headers,
                method="POST",
            )
            assert urllib.request.urlopen(req, timeout=30).status == 202
    finally:
        server.shutdown()
        broker.close()

    out = subprocess.run(
        [sys.executable, "-m", "tests.tracing._consumer", kafka_bootstrap, topic, f"g-{uuid.uuid4().hex[:8]}",
         "1", database_url, orders_table, fmt],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ},
    )
    assert out.returncode == 0, out.stderr
    remote = {s["name"]: s for s in map(json.loads, out.stdout.splitlines())}
    local = {s.name: s for s in spans.finished()}

    client, server_span, service = local["client.checkout"], local["POST /orders"], local["order.service"]
    send = local[f"send {topic}"]
    consume, insert = remote["order.consume"], remote["db.insert"]
    trace_id = client.context.trace_id
    assert {s.context.trace_id for s in local.values()} == {trace_id}
    assert {consume["trace_id"], insert["trace_id"]} == {trace_id}
    # the parent chain, hop by hop
    assert server_span.parent.span_id == client.context.span_id
    assert service.parent.span_id == server_span.context.span_id
    assert send.parent.span_id == service.context.span_id and send.kind == SpanKind.PRODUCER
    assert consume["parent_id"] == send.context.span_id and consume["kind"] == "CONSUMER"
    assert consume["links"] == [send.context.span_id]  # the conventions' link, as well as the parent
    assert insert["parent_id"] == consume["span_id"]

    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:  # the request context crossed Kafka as baggage
        assert conn.execute(text(f"SELECT order_id, shard FROM {orders_table}")).all() == [(7, "db_3")]
    engine.dispose()
