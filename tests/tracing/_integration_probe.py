"""Run with a global OpenTelemetry SDK: producers, the outbox, processors, locks and limiters of distkit emit
and carry traces without any wrapping. Prints one JSON line with what was seen.

``python -m tests.tracing._integration_probe REDIS_URL KAFKA_BOOTSTRAP TOPIC_IN TOPIC_OUT``
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from distkit.locks import Locks
from distkit.messaging import KafkaBroker, Message, TransactionalProcessor
from distkit.ratelimit import MemoryBackend, Rate, TokenBucket
from distkit.tracing import current_request_context, request_context


def main(redis_url: str, bootstrap: str, topic_in: str, topic_out: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("probe")
    broker = KafkaBroker(bootstrap, timeout_s=15)
    seen_ctx: list[dict[str, Any]] = []

    def handler(msg: Message) -> list[Message]:  # a plain function: the processor traces it
        seen_ctx.append(dict(current_request_context()))
        return [Message(topic=topic_out, value=msg.value)]

    with tracer.start_as_current_span("request") as root, request_context(shard="db_7"):
        producer = broker.producer()
        producer.send(topic_in, {"n": 1})  # no headers given: the trace and the shard go along anyway
        producer.flush(10)
        locks = Locks(redis.Redis.from_url(redis_url), namespace=f"t-{uuid.uuid4().hex[:6]}")
        with locks.lock("job"):
            pass
        locks.close()
        TokenBucket(Rate(5, per_s=1), backend=MemoryBackend()).acquire("user:1")
    proc = TransactionalProcessor(broker, group_id=f"g-{uuid.uuid4().hex[:6]}", input_topics=[topic_in],
                                  transactional_id=f"tx-{uuid.uuid4().hex[:6]}", handler=handler)
    proc.run(max_messages=1, idle_timeout_s=30, handle_signals=False)
    proc.close()
    broker.close()
    spans = exporter.get_finished_spans()
    request = next(s for s in spans if s.name == "request")
    consume = [s for s in spans if s.kind.name == "CONSUMER"]
    print(json.dumps({
        "root_trace": root.get_span_context().trace_id,
        "consumer_traces": [s.context.trace_id for s in consume],
        "consumer_parents": [s.parent.span_id if s.parent else None for s in consume],
        "root_span": request.context.span_id,
        "events": [e.name for e in request.events],
        "seen_ctx": seen_ctx,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:5])
