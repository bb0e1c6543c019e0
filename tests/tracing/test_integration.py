"""With an OpenTelemetry SDK installed, distkit's own producers, processors, locks and limiters take part in
the trace without any wrapping (run in a subprocess: a global tracer provider can be set only once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_distkit_modules_join_the_trace(redis_url: str, kafka_bootstrap: str, new_topic: Any) -> None:
    t_in, t_out = new_topic(), new_topic()
    out = subprocess.run([sys.executable, "-m", "tests.tracing._integration_probe", redis_url, kafka_bootstrap,
                          t_in, t_out], cwd=ROOT, env={**os.environ}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["consumer_traces"] == [got["root_trace"]]  # the processor's span continues the request's trace
    assert got["consumer_parents"] != [None]
    assert got["seen_ctx"] == [{"shard": "db_7"}]  # the request context crossed Kafka as baggage
    assert "distkit.lock.acquire" in got["events"] and "distkit.ratelimit.decision" in got["events"]


def test_without_an_sdk_messages_carry_no_trace_headers() -> None:
    from distkit.messaging import InMemoryBroker
    from distkit.tracing import request_context

    broker = InMemoryBroker()
    broker.create_topic("t")
    p = broker.producer()
    p.send("t", 1)
    with request_context(shard="s1"):
        p.send("t", 2, headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
        p.send("t", 3)
    msgs = broker.consumer("g", ["t"]).poll_batch(10, 1.0)
    assert msgs[0].headers == {}  # nothing to carry: nothing added
    assert msgs[1].headers == {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}  # theirs
    assert msgs[2].headers == {"baggage": "shard=s1"}  # the request context travels even without tracing
    broker.close()


def test_a_private_tracer_provider_is_carried_across_kafka(spans: Any, kafka_bootstrap: str, new_topic: Any) -> None:
    """An application that passes its own provider (no global SDK) and sends inside one of its spans: the message
    carries that span's trace (it used to carry nothing unless a global SDK or a request context was set)."""
    from distkit.messaging.kafka import KafkaBroker

    topic = new_topic()
    broker = KafkaBroker(kafka_bootstrap)
    try:
        producer = broker.producer()
        with spans.tracer.start_as_current_span("checkout") as span:
            producer.send(topic, {"order": 1})
        producer.send(topic, {"order": 2})  # outside any span: nothing to carry
        producer.flush()
        consumer = broker.consumer(group_id=f"g-{topic}", topics=[topic])
        got = list(consumer.poll_iter(timeout_s=10, max_messages=2))
        consumer.close()
    finally:
        broker.close()
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert [m.value for m in got] == [{"order": 1}, {"order": 2}]
    assert trace_id in str(got[0].headers.get("traceparent"))
    assert "traceparent" not in got[1].headers


def test_a_saga_started_in_the_background_keeps_the_callers_trace(spans: Any) -> None:
    """``SagaCoordinator.start()`` runs the saga on its executor with the caller's context (trace, request
    context); it used to run with an empty one."""
    from opentelemetry import trace

    from distkit.saga import MemorySagaLog, Saga, SagaCoordinator, Step
    from distkit.tracing import request_context

    seen: list[tuple[int, Any]] = []

    def act(ctx: Any) -> None:
        from distkit.tracing.context import current_request_context

        seen.append((trace.get_current_span().get_span_context().trace_id, current_request_context()))

    saga = Saga("traced", steps=[Step("one", action=act)])
    with SagaCoordinator(log=MemorySagaLog()) as coord, spans.tracer.start_as_current_span("request") as span:
        with request_context(tenant="t1"):
            coord.start(saga, saga_id="s-1").result(timeout=10)
    assert seen == [(span.get_span_context().trace_id, {"tenant": "t1"})]
