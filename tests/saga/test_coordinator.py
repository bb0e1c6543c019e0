"""Saga behaviour on the memory log, SQLite and PostgreSQL: order, compensation, retries, timeouts, guards."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from distkit.errors import InvalidArgumentError, SagaBusyError
from distkit.saga import (
    RetryPolicy,
    Saga,
    SagaCoordinator,
    SagaStatus,
    SqlStep,
    Step,
    StepState,
)
from tests.saga.conftest import Recorder


def order_saga(rec: Recorder, **step3: Any) -> Saga:
    return Saga("place_order", steps=[
        Step("debit_balance", action=rec.action("debit"), compensate=rec.action("refund")),
        Step("deduct_stock", action=rec.action("deduct"), compensate=rec.action("restock")),
        Step("create_order", action=rec.action("create"), **step3),
    ])


def test_happy_path(saga_log: Any, rec: Recorder) -> None:
    events: list[tuple[str, str | None]] = []
    with SagaCoordinator(saga_log, on_event=lambda e: events.append((e.kind, e.step))) as coord:
        result = coord.run(order_saga(rec), "order-1", {"user": 42, "amount": "9.90"})
    assert result.status is SagaStatus.COMPLETED and result.ok and result.error is None
    want = {"debit_balance": "debit-ok", "deduct_stock": "deduct-ok", "create_order": "create-ok"}
    assert result.step_results == want
    assert rec.calls == ["debit", "deduct", "create"]
    assert events[0] == ("started", None) and events[-1] == ("completed", None)
    assert [e for e in events if e[0] == "step_done"] == [("step_done", n) for n in
                                                        ("debit_balance", "deduct_stock", "create_order")]
    assert coord.status("order-1") is SagaStatus.COMPLETED


def test_failure_at_step_three_compensates_two_then_one_exactly_once(saga_log: Any, rec: Recorder) -> None:
    rec.fail["create"] = 99
    with SagaCoordinator(saga_log) as coord:
        result = coord.run(order_saga(rec), "order-2")
    assert result.status is SagaStatus.COMPENSATED
    assert rec.calls == ["debit", "deduct", "create", "restock", "refund"]
    assert "create_order" in (result.error or "")
    states = {s["name"]: s["state"] for s in saga_log.get("order-2").steps}
    assert states == {"debit_balance": "COMPENSATED", "deduct_stock": "COMPENSATED", "create_order": "FAILED"}


def test_retries_with_backoff_then_success(saga_log: Any, rec: Recorder) -> None:
    slept: list[float] = []
    rec.fail["deduct"] = 2
    saga = Saga("s", steps=[Step("a", action=rec.action("a")), Step("deduct", action=rec.action("deduct"),
                retry=RetryPolicy(max_attempts=3, backoff_s=0.1, multiplier=2))])
    with SagaCoordinator(saga_log, sleep=slept.append) as coord:
        result = coord.run(saga, "r-1")
    assert result.status is SagaStatus.COMPLETED and rec.calls == ["a", "deduct", "deduct", "deduct"]
    assert slept == pytest.approx([0.1, 0.2])
    assert saga_log.get("r-1").step("deduct")["attempts"] == 3


def test_retries_exhausted_compensate(saga_log: Any, rec: Recorder) -> None:
    rec.fail["deduct"] = 5
    saga = Saga("s", steps=[Step("a", action=rec.action("a"), compensate=rec.action("undo-a")),
                            Step("deduct", action=rec.action("deduct"), retry=RetryPolicy(max_attempts=3))])
    with SagaCoordinator(saga_log, sleep=lambda s: None) as coord:
        result = coord.run(saga, "r-2")
    assert result.status is SagaStatus.COMPENSATED and rec.calls == ["a", "deduct", "deduct", "deduct", "undo-a"]


def test_exceptions_outside_retry_on_fail_at_once(saga_log: Any, rec: Recorder) -> None:
    def bad(ctx: Any) -> None:
        rec.calls.append("bad")
        raise KeyError("no such account")

    saga = Saga("s", steps=[Step("a", action=rec.action("a"), compensate=rec.action("undo-a")),
                            Step("b", action=bad, retry=RetryPolicy(max_attempts=5), retry_on=(TimeoutError,))])
    with SagaCoordinator(saga_log, sleep=lambda s: None) as coord:
        assert coord.run(saga, "r-3").status is SagaStatus.COMPENSATED
    assert rec.calls == ["a", "bad", "undo-a"]


def test_a_timed_out_step_is_compensated_with_unknown_outcome(saga_log: Any, rec: Recorder) -> None:
    seen: list[Any] = []
    release = threading.Event()

    def slow(ctx: Any) -> None:
        release.wait(10)

    saga = Saga("s", steps=[Step("a", action=rec.action("a"), compensate=rec.action("undo-a")),
                            Step("slow", action=slow, compensate=lambda ctx: seen.append(ctx), timeout_s=0.2)])
    with SagaCoordinator(saga_log) as coord:
        t0 = time.monotonic()
        result = coord.run(saga, "t-1")
        elapsed = time.monotonic() - t0
    release.set()
    assert result.status is SagaStatus.COMPENSATED and elapsed < 5
    (ctx,) = seen
    assert ctx.compensating and not ctx.action_completed and ctx.idempotency_key == "t-1:slow:compensate"
    assert rec.calls == ["a", "undo-a"]
    assert saga_log.get("t-1").step("slow")["state"] == StepState.COMPENSATED.value


def test_compensation_that_keeps_failing_is_stuck(saga_log: Any, rec: Recorder) -> None:
    rec.fail["create"] = 1
    rec.fail["refund"] = 99
    saga = Saga("s", steps=[
        Step("debit", action=rec.action("debit"), compensate=rec.action("refund"),
             compensate_retry=RetryPolicy(max_attempts=3)),
        Step("create", action=rec.action("create")),
    ])
    events: list[str] = []
    with SagaCoordinator(saga_log, sleep=lambda s: None, on_event=lambda e: events.append(e.kind)) as coord:
        result = coord.run(saga, "stuck-1")
        assert result.status is SagaStatus.FAILED and "refund failed" in (result.error or "")
        assert [r.saga_id for r in coord.stuck()] == ["stuck-1"]
    assert rec.calls == ["debit", "create", "refund", "refund", "refund"]
    assert events.count("failed") == 1


def test_the_same_saga_id_never_runs_twice(saga_log: Any, rec: Recorder) -> None:
    with SagaCoordinator(saga_log) as coord:
        first = coord.run(order_saga(rec), "dup-1")
        again = coord.run(order_saga(rec), "dup-1")
    assert first == again and rec.calls == ["debit", "deduct", "create"]


def test_sixteen_concurrent_runs_of_one_saga_id_drive_it_once(saga_log: Any, rec: Recorder) -> None:
    gate = threading.Barrier(16)
    lock = threading.Lock()
    calls: list[str] = []

    def step(ctx: Any) -> None:
        with lock:
            calls.append(ctx.step)
        time.sleep(0.05)

    saga = Saga("s", steps=[Step("a", action=step), Step("b", action=step)])
    outcomes: list[Any] = []
    coords = [SagaCoordinator(saga_log) for _ in range(16)]

    def go(c: SagaCoordinator) -> None:
        gate.wait(10)
        try:
            outcomes.append(c.run(saga, "race-1").status)
        except SagaBusyError:
            outcomes.append("busy")

    threads = [threading.Thread(target=go, args=(c,)) for c in coords]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for c in coords:
        c.close()
    assert calls == ["a", "b"]  # driven by exactly one coordinator
    assert len(outcomes) == 16 and set(outcomes) <= {SagaStatus.COMPLETED, "busy"}
    assert SagaStatus.COMPLETED in outcomes


def test_sql_step_commits_effect_and_record_together(rec: Recorder, pg_engine: Any) -> None:
    from sqlalchemy import text

    from distkit.saga import SqlSagaLog

    with pg_engine.begin() as conn:
        conn.execute(text("CREATE TABLE balance (user_id int PRIMARY KEY, amount int)"))
        conn.execute(text("INSERT INTO balance VALUES (42, 100)"))

    def debit(ctx: Any) -> int:
        row = ctx.connection.execute(text("UPDATE balance SET amount = amount - 30 WHERE user_id = 42 "
                                          "RETURNING amount")).scalar_one()
        return int(row)

    def refund(ctx: Any) -> None:
        ctx.connection.execute(text("UPDATE balance SET amount = amount + 30 WHERE user_id = 42"))

    def boom(ctx: Any) -> None:
        ctx.connection.execute(text("UPDATE balance SET amount = 0"))
        raise RuntimeError("after a write: rolled back with the step")

    saga = Saga("pay", steps=[SqlStep("debit", action=debit, compensate=refund), SqlStep("boom", action=boom)])
    with SagaCoordinator(SqlSagaLog(pg_engine)) as coord:
        result = coord.run(saga, "pay-1")
    assert result.status is SagaStatus.COMPENSATED
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT amount FROM balance")).scalar_one() == 100


def test_bad_definitions_and_inputs_are_typed_errors(saga_log: Any, rec: Recorder) -> None:
    with pytest.raises(InvalidArgumentError):
        Saga("s", steps=[])
    with pytest.raises(InvalidArgumentError, match="duplicate"):
        Saga("s", steps=[Step("a", action=rec.action("a")), Step("a", action=rec.action("a"))])
    with pytest.raises(InvalidArgumentError):
        Step("a", action="not callable")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(InvalidArgumentError):
        RetryPolicy(backoff_s=float("nan"))
    with pytest.raises(InvalidArgumentError):
        Step("a", action=rec.action("a"), timeout_s=0)
    saga = Saga("s", steps=[Step("a", action=rec.action("a"))])
    with SagaCoordinator(saga_log) as coord:
        with pytest.raises(InvalidArgumentError):
            coord.run(saga, "x" * 201)
        with pytest.raises(InvalidArgumentError):
            coord.run(saga, "p-1", {"when": object()})
        with pytest.raises(InvalidArgumentError):
            coord.run(saga, "p-2", {"x": float("nan")})
        with pytest.raises(InvalidArgumentError):
            coord.register(Saga("q", steps=[SqlStep("a", action=rec.action("a"), timeout_s=1)]))
        coord.run(saga, "ü-订单-1", {"name": "Zürich €5"})
        with pytest.raises(InvalidArgumentError, match="belongs to saga"):
            coord.run(Saga("other", steps=[Step("a", action=rec.action("a"))]), "ü-订单-1")
    assert saga_log.get("ü-订单-1").payload == {"name": "Zürich €5"}


def test_start_is_non_blocking_and_many_sagas_finish(saga_log: Any) -> None:
    saga = Saga("s", steps=[Step("a", action=lambda ctx: ctx.payload["i"]), Step("b", action=lambda ctx: None)])
    with SagaCoordinator(saga_log, max_workers=8) as coord:
        futures = [coord.start(saga, f"bulk-{i}", {"i": i}) for i in range(100)]
        results = [f.result(60) for f in futures]
    assert [r.step_results["a"] for r in results] == list(range(100))
    assert {r.status for r in results} == {SagaStatus.COMPLETED}


def test_spans_per_step_when_a_tracer_is_configured(saga_log: Any, rec: Recorder) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rec.fail["create"] = 1
    with SagaCoordinator(saga_log, tracer_provider=provider) as coord:
        coord.run(order_saga(rec), "span-1")
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == [
        "saga place_order.debit_balance action", "saga place_order.deduct_stock action",
        "saga place_order.create_order action", "saga place_order.deduct_stock compensate",
        "saga place_order.debit_balance compensate",
    ]


def test_resume_pending_never_drives_a_saga_this_coordinator_is_driving(saga_log: Any, fake_clock: Any) -> None:
    """The log's claim accepts the saga's own owner: when a late heartbeat let the lease of a saga this coordinator
    is driving lapse, its own resume_pending took the saga over and ran the step a second time, concurrently, and
    the first driver then lost it (SagaOwnershipLostError)."""
    calls: list[int] = []
    entered, release = threading.Event(), threading.Event()

    def work(ctx: Any) -> str:
        calls.append(ctx.attempt)
        if len(calls) == 1:  # the first driver is mid-step
            entered.set()
            release.wait(10)
        return "done"

    saga = Saga("slow", steps=[Step("work", action=work)])
    with SagaCoordinator(saga_log, lease_s=30, clock=fake_clock) as coord:  # heartbeat every 10 s: not in this test
        running = coord.start(saga, "own-1")
        assert entered.wait(10)
        fake_clock.advance(60_000)  # the lease lapsed while the step runs
        assert coord.resume_pending() == []
        release.set()
        assert running.result(10).ok
    assert calls == [1]


def test_running_a_saga_id_this_coordinator_is_driving_is_busy_not_a_second_driver(saga_log: Any) -> None:
    """``run()`` of an id that exists claims it; the claim accepts the coordinator's own owner, so a second
    ``run``/``start`` of the same id in the same coordinator drove the saga twice, concurrently."""
    calls: list[int] = []
    entered, release = threading.Event(), threading.Event()

    def work(ctx: Any) -> str:
        calls.append(ctx.attempt)
        entered.set()
        release.wait(10)
        return "done"

    saga = Saga("slow-twice", steps=[Step("work", action=work)])
    with SagaCoordinator(saga_log, lease_s=30) as coord:
        running = coord.start(saga, "twice-1")
        assert entered.wait(10)
        with pytest.raises(SagaBusyError):
            coord.run(saga, "twice-1")
        release.set()
        assert running.result(10).ok
        assert coord.run(saga, "twice-1").ok  # finished: the stored result, nothing run again
    assert calls == [1]
