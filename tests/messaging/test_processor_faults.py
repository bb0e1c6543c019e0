"""Issue 15 items 9 and 13 on both brokers: every error out of a transaction aborts and rewinds to the
committed offsets (outputs per input: exactly 1), and the DLT forwards the original bytes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from distkit.errors import BrokerUnavailableError, MessagingError, TransactionAbortedError
from distkit.messaging import Message, TransactionalProcessor
from tests.messaging.conftest import drain, uid
from tests.messaging.faults import FaultPlan, FaultyBroker


def injected(kind: type[BaseException], what: str) -> Any:
    return lambda: kind(f"injected {what}")


@pytest.mark.slow
def test_every_error_path_aborts_and_rewinds_so_each_input_has_exactly_one_output(broker, broker_kind, topic, caplog):
    src, out = topic(partitions=2), topic()
    n = 40
    with broker.transactional_producer(uid("tx")) as tx:
        for i in range(n):
            tx.send(src, {"n": i}, key=str(i))
    plan = (
        FaultPlan()
        .at("send", 5, "before", injected(BrokerUnavailableError, "produce outage"))
        .at("send_offsets", 3, "before", injected(TransactionAbortedError, "send_offsets abort"))
        .at("send_offsets", 5, "after", injected(MessagingError, "send_offsets error after the offsets went in"))
        .at("commit", 4, "before", injected(BrokerUnavailableError, "commit timeout"))
        .at("commit", 6, "after", injected(BrokerUnavailableError, "commit outcome unknown (it went through)"))
        .at("commit", 8, "before", injected(RuntimeError, "bug in the commit path"))
        .at("send", 25, "before", injected(RuntimeError, "bug in the produce path"))
        .at("send_offsets", 9, "after", injected(KeyboardInterrupt, "Ctrl-C inside send_offsets"))
    )
    proc = TransactionalProcessor(
        FaultyBroker(broker, plan),
        group_id=uid("g"),
        input_topics=[src],
        transactional_id=uid("p"),
        handler=lambda m: [Message(topic=out, key=m.key, value={"n": m.value["n"]})],
        batch_size=4,
        backoff_s=0.01,
        max_backoff_s=0.05,
    )
    raised: list[str] = []
    for _ in range(10):  # run() again after every exception, as a supervisor would
        try:
            stats = proc.run(idle_timeout_s=1.5 if broker_kind == "kafka" else 0.2, handle_signals=False)
        except (RuntimeError, KeyboardInterrupt) as exc:
            raised.append(str(exc))
            continue
        break
    proc.close()
    assert not plan.plan, f"faults not reached: {plan.plan}"
    ridden_out = [r for r in caplog.records if "re-reading from the committed offsets" in r.getMessage()]
    assert len(raised) == 3 and len(ridden_out) == 5  # 3 propagated (then run() again), 5 ridden out inside run()
    assert stats.processed > 0
    outputs = drain(broker, [out], expect=n)
    counts = Counter(m.value["n"] for m in outputs)
    assert sorted(counts) == list(range(n)), sorted(set(range(n)) - set(counts))  # no input skipped
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}  # none duplicated
    assert drain(broker, [src], expect=1, group=proc.group_id, timeout_s=2, quiet_s=0.3) == []  # all committed


def test_dead_letter_forwards_original_bytes_tombstones_and_not_retryable_at_once(broker, topic):
    src, out = topic(), topic()
    p = broker.producer()
    raw_values: list[bytes | None] = [b'{"price": 1.50,  "n": 0}', None, b"\xff\xfe not json", b'{"n": 3}']
    for i, v in enumerate(raw_values):
        p.send_raw(src, v, key=f"k{i}".encode(), headers={"event-id": f"e{i}", "city": "Zürich €"})
    p.flush()
    p.close()
    calls: Counter[int] = Counter()

    class Fatal(Exception):
        pass

    def handler(m: Message) -> list[Message]:
        idx = int(m.key.decode()[1:])
        calls[idx] += 1
        if idx == 0:
            raise ValueError("transient, retried")  # retryable: max_attempts tries
        if idx in (1, 2):
            raise Fatal("bad input")  # not retryable: straight to the DLT
        return [Message(topic=out, value=m.value)]

    delays: list[float] = []
    proc = TransactionalProcessor(
        broker,
        group_id=uid(),
        input_topics=[src],
        transactional_id=uid("p"),
        handler=handler,
        max_attempts=3,
        backoff_s=0.01,
        jitter=0.5,
        not_retryable=(Fatal,),
        sleep=delays.append,
    )
    stats = proc.run(max_messages=4, idle_timeout_s=10, handle_signals=False)
    proc.close()
    assert calls == {0: 3, 1: 1, 2: 1, 3: 1} and stats.dead_lettered == 3 and stats.retries == 2
    dead = drain(broker, [f"{src}.DLT"], expect=3)
    by_key = {m.key: m for m in dead}
    assert len(dead) == 3 and set(by_key) == {b"k0", b"k1", b"k2"}
    assert by_key[b"k0"].raw_value == raw_values[0]  # 1.50 and the double space survive: not re-encoded
    assert by_key[b"k1"].raw_value is None and by_key[b"k1"].value is None  # a tombstone stays a tombstone
    assert by_key[b"k2"].raw_value == raw_values[2]
    assert by_key[b"k0"].header("city") == "Zürich €" and by_key[b"k0"].header("dlt-attempts") == "3"
    assert by_key[b"k1"].header("dlt-attempts") == "1" and by_key[b"k1"].header("dlt-error-type").endswith("Fatal")
    assert len(delays) == 2 and all(0.005 <= d <= 0.05 for d in delays)  # jittered exponential: 0.01, 0.02 ±50 %
    assert [m.value for m in drain(broker, [out], expect=1)] == [{"n": 3}]


def test_backoff_jitter_spreads_and_respects_the_cap():
    from distkit.messaging import InMemoryBroker

    proc = TransactionalProcessor(
        InMemoryBroker(), "g", ["t"], "p", handler=lambda m: None, backoff_s=1.0, max_backoff_s=3.0, jitter=0.5
    )
    first = {round(proc._backoff(1), 6) for _ in range(50)}
    assert len(first) > 10 and all(0.5 <= d <= 1.5 for d in first)
    assert all(proc._backoff(5) <= 3.0 for _ in range(50))  # 16 s before the cap, never above it
    plain = TransactionalProcessor(InMemoryBroker(), "g", ["t"], "p", handler=lambda m: None, jitter=0)
    assert [plain._backoff(a) for a in (1, 2, 3)] == [0.1, 0.2, 0.4]
    with pytest.raises(ValueError, match="jitter"):
        TransactionalProcessor(InMemoryBroker(), "g", ["t"], "p", handler=lambda m: None, jitter=2)
