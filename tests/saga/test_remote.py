"""Remote steps over the real Kafka: replies correlated by saga/step, duplicates ignored, timeouts compensated,
a late success compensated too, 100 concurrent sagas; the participant's fence (Seata guards) on PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from distkit.saga import (
    FenceDecision,
    RemoteStep,
    Saga,
    SagaCoordinator,
    SagaStatus,
    SqlFence,
    SqlSagaLog,
    Step,
    parse_command,
    reply_for,
)


class Participant:
    """The stock service: deducts on "action", restocks on "compensate", behind the fence, in one transaction."""

    def __init__(self, broker: Any, engine: Any, topic: str) -> None:
        self.engine = engine
        self.fence = SqlFence(engine)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE stock (sku text PRIMARY KEY, qty int)"))
            conn.execute(text("INSERT INTO stock VALUES ('apple', 1000)"))
        self.broker = broker
        self.producer = broker.producer()
        self.consumer = broker.consumer(f"stock-{uuid.uuid4().hex[:6]}", [topic])
        self.stop = threading.Event()
        self.decisions: list[tuple[str, str, FenceDecision]] = []
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        while not self.stop.is_set():
            for msg in self.consumer.poll_batch(100, 0.1):
                self.handle(msg.value)
            self.consumer.commit()

    def handle(self, value: Any) -> None:
        cmd = parse_command(value)
        behaviour = cmd.payload.get("behaviour", "ok")
        with self.engine.begin() as conn:
            if cmd.kind == "action" and behaviour == "refuse":
                decision = FenceDecision.SUSPENDED  # out of stock: refused, nothing done
            elif cmd.kind == "action":
                decision = self.fence.action(conn, cmd.saga_id, cmd.step)
                if decision is FenceDecision.RUN:
                    conn.execute(text("UPDATE stock SET qty = qty - 1 WHERE sku = 'apple'"))
            else:
                decision = self.fence.compensate(conn, cmd.saga_id, cmd.step)
                if decision is FenceDecision.RUN:
                    conn.execute(text("UPDATE stock SET qty = qty + 1 WHERE sku = 'apple'"))
        self.decisions.append((cmd.saga_id, cmd.kind, decision))
        ok = decision is not FenceDecision.SUSPENDED
        reply = reply_for(cmd, ok=ok, result={"sku": "apple"} if ok else None, error=None if ok else "refused")

        def send() -> None:
            self.producer.send(cmd.reply_topic, reply, key=cmd.saga_id)
            if behaviour == "duplicate":
                self.producer.send(cmd.reply_topic, reply, key=cmd.saga_id)
            self.producer.flush(10)

        if behaviour == "late" and cmd.kind == "action":
            threading.Timer(2.5, send).start()  # the reply comes after the coordinator's 1 s timeout
        else:
            send()

    def qty(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT qty FROM stock")).scalar_one())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.consumer.close()
        self.producer.close()


@pytest.fixture
def remote(kafka_bootstrap: str, new_topic: Any, pg_engine: Any) -> Iterator[tuple[Any, Participant, Saga, Any]]:
    from distkit.messaging import KafkaBroker

    commands, replies = new_topic(partitions=2), new_topic(partitions=2)
    broker = KafkaBroker(kafka_bootstrap, timeout_s=15)
    participant = Participant(broker, pg_engine, commands)
    undone: list[str] = []
    saga = Saga("order", steps=[
        Step("debit", action=lambda c: "debited", compensate=lambda c: undone.append(c.saga_id)),
        RemoteStep("reserve", command_topic=commands, reply_topic=replies, timeout_s=1.0),
        Step("create", action=lambda c: 1 / 0 if c.payload.get("fail_last") else "created"),
    ])
    coord = SagaCoordinator(SqlSagaLog(pg_engine), broker, sagas=[saga], reply_group=f"g-{uuid.uuid4().hex[:6]}")
    yield coord, participant, saga, undone
    coord.close()
    participant.close()
    broker.close()


@pytest.mark.slow
def test_remote_step_outcomes(remote: tuple[Any, Participant, Saga, Any]) -> None:
    coord, participant, saga, undone = remote
    # success with a duplicated reply: the second one is ignored
    ok = coord.run(saga, "ok-1", {"behaviour": "duplicate"})
    assert ok.status is SagaStatus.COMPLETED and ok.step_results["reserve"] == {"sku": "apple"}
    assert participant.qty() == 999
    # the participant refuses: step failed → debit compensated, no stock change
    refused = coord.run(saga, "refused-1", {"behaviour": "refuse"})
    assert refused.status is SagaStatus.COMPENSATED and undone == ["refused-1"]
    assert participant.qty() == 999
    # a later step fails: the remote step is compensated through the participant
    failed_late = coord.run(saga, "comp-1", {"fail_last": True})
    assert failed_late.status is SagaStatus.COMPENSATED
    assert [d[1:] for d in participant.decisions if d[0] == "comp-1"] == [
        ("action", FenceDecision.RUN), ("compensate", FenceDecision.RUN)]
    assert participant.qty() == 999
    # no reply in time: compensated; the late success (2.5 s) triggers the compensation again — a no-op
    t0 = time.monotonic()
    late = coord.run(saga, "late-1", {"behaviour": "late"})
    assert late.status is SagaStatus.COMPENSATED and time.monotonic() - t0 < 15
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and [d for d in participant.decisions if d[0] == "late-1"][-1:] != [
        ("late-1", "compensate", FenceDecision.DUPLICATE)]:
        time.sleep(0.1)
    late_decisions = [d[1:] for d in participant.decisions if d[0] == "late-1"]
    assert late_decisions[0] == ("action", FenceDecision.RUN) and ("compensate", FenceDecision.RUN) in late_decisions
    assert late_decisions[-1] == ("compensate", FenceDecision.DUPLICATE)  # sent again for the late success
    assert participant.qty() == 999  # deducted once, restocked once


@pytest.mark.slow
def test_hundred_concurrent_remote_sagas_all_finish(remote: tuple[Any, Participant, Saga, Any]) -> None:
    coord, participant, saga, _ = remote
    futures = [coord.start(saga, f"bulk-{i}", {"fail_last": i % 4 == 0}) for i in range(100)]
    results = [f.result(120) for f in futures]
    assert all(r.status.terminal for r in results)
    assert sum(r.status is SagaStatus.COMPLETED for r in results) == 75
    assert sum(r.status is SagaStatus.COMPENSATED for r in results) == 25
    assert participant.qty() == 1000 - 75


def test_fence_guards_on_postgres(pg_engine: Any) -> None:
    fence = SqlFence(pg_engine)
    with pg_engine.begin() as conn:
        assert fence.compensate(conn, "s1", "reserve") is FenceDecision.EMPTY  # nothing ran: empty compensation
        assert fence.action(conn, "s1", "reserve") is FenceDecision.SUSPENDED  # the late action is refused
        assert fence.action(conn, "s2", "reserve") is FenceDecision.RUN
        assert fence.action(conn, "s2", "reserve") is FenceDecision.DUPLICATE
        assert fence.compensate(conn, "s2", "reserve") is FenceDecision.RUN
        assert fence.compensate(conn, "s2", "reserve") is FenceDecision.DUPLICATE
        assert fence.action(conn, "s2", "reserve") is FenceDecision.SUSPENDED


def test_sixteen_concurrent_duplicate_commands_run_once(pg_engine: Any) -> None:
    fence = SqlFence(pg_engine)
    gate = threading.Barrier(16)
    out: list[FenceDecision] = []

    def go() -> None:
        gate.wait(10)
        for _ in range(20):
            try:
                with pg_engine.begin() as conn:
                    out.append(fence.action(conn, "dup", "reserve"))
                return
            except Exception:  # a serialisation conflict on the same key: retry, as a participant would
                time.sleep(0.01)

    threads = [threading.Thread(target=go) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(out).count(FenceDecision.RUN) == 1 and len(out) == 16
