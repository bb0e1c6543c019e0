"""Request context follows executors, nested executors and asyncio tasks, and never leaks across requests."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from distkit.errors import InvalidArgumentError
from distkit.tracing import ContextExecutor, current_request_context, request_context
from distkit.tracing.logging import TraceIdFilter


def test_executor_tasks_and_nested_executors_see_the_submitters_context(spans: Any) -> None:
    with ContextExecutor(max_workers=4) as outer, ContextExecutor(max_workers=4) as inner:

        def leaf() -> tuple[dict[str, Any], int]:
            from opentelemetry import trace

            return dict(current_request_context()), trace.get_current_span().get_span_context().span_id

        def middle() -> tuple[dict[str, Any], int]:
            with request_context(step="middle"):
                return inner.submit(leaf).result()

        with spans.tracer.start_as_current_span("request") as span, request_context(shard="db_1", user_id=7):
            values, span_id = outer.submit(middle).result()
        assert values == {"shard": "db_1", "user_id": 7, "step": "middle"}
        assert span_id == span.get_span_context().span_id
        assert outer.submit(lambda: dict(current_request_context())).result() == {}


def test_a_hundred_concurrent_requests_never_see_each_others_context() -> None:
    barrier = threading.Barrier(100)
    wrong: list[tuple[int, Any]] = []
    with ContextExecutor(max_workers=8) as pool:

        def request(i: int) -> None:
            with request_context(shard=f"db_{i % 2}", request=i):
                barrier.wait(timeout=30)  # all 100 requests are inside their context at once
                futures = [pool.submit(lambda: dict(current_request_context())) for _ in range(5)]
                for f in futures:
                    got = f.result()
                    if got != {"shard": f"db_{i % 2}", "request": i}:
                        wrong.append((i, got))

        threads = [threading.Thread(target=request, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert wrong == []


async def test_asyncio_tasks_inherit_and_do_not_leak() -> None:
    async def request(i: int) -> list[Any]:
        with request_context(shard=f"db_{i}"):
            inner = asyncio.create_task(asyncio.sleep(0, dict(current_request_context())))
            await asyncio.sleep(0)
            return [await inner, dict(current_request_context())]

    results = await asyncio.gather(*(request(i) for i in range(100)))
    assert results == [[{"shard": f"db_{i}"}] * 2 for i in range(100)]
    assert dict(current_request_context()) == {}


@pytest.mark.parametrize("bad", ["", "has space", "dash-ed", "ünï"])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgumentError), request_context(**{bad: 1}):
        pass


def test_log_records_carry_the_trace_id(spans: Any) -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(TraceIdFilter())
    log = logging.getLogger("tests.tracing.filter")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with spans.tracer.start_as_current_span("work") as span:
            log.info("inside")
        log.info("outside")
    finally:
        log.removeHandler(handler)
    sc = span.get_span_context()
    assert (records[0].trace_id, records[0].span_id) == (format(sc.trace_id, "032x"), format(sc.span_id, "016x"))
    assert records[1].trace_id == "0" * 32
