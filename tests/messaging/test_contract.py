"""The broker contract, run against InMemoryBroker and the real Kafka from ``make test``."""

from __future__ import annotations

import threading
import time
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from distkit.errors import (
    CommitFailedError,
    InvalidTopicError,
    MessagingError,
    ProducerFencedError,
    SerializationError,
    TransactionAbortedError,
)
from distkit.messaging import Message, TransactionalProcessor
from tests.messaging.conftest import drain, uid


def test_committed_transaction_seen_whole_aborted_never(broker, topic):
    t = topic()
    tx = broker.transactional_producer(uid("tx"))
    with tx:
        for i in range(3):
            tx.send(t, {"n": i}, key=b"k", headers={"event-id": f"c{i}"})
    with pytest.raises(RuntimeError), tx:
        for i in range(5):
            tx.send(t, {"n": 100 + i}, key=b"k")
        tx.flush()  # on the broker's log, but uncommitted
        raise RuntimeError("business step failed")
    with tx:
        tx.send(t, {"n": "end"}, key=b"k")

    committed = drain(broker, [t], expect=4, until=lambda m: m.value == {"n": "end"})
    assert [m.value["n"] for m in committed] == [0, 1, 2, "end"]  # the aborted 5: 0 of 5 seen
    assert [m.header("event-id") for m in committed[:3]] == ["c0", "c1", "c2"]
    raw = drain(broker, [t], expect=9, isolation="read_uncommitted", until=lambda m: m.value == {"n": "end"})
    assert [m.value["n"] for m in raw] == [0, 1, 2, 100, 101, 102, 103, 104, "end"]  # the abort was real


def test_message_fields_round_trip(broker, topic):
    t = topic()
    with broker.transactional_producer(uid("tx")) as tx:
        tx.send(t, {"price": Decimal("9.99"), "ok": True}, key="order-7", headers={"a": "x", "b": b"\xff\x00"})
    (m,) = drain(broker, [t], expect=1, quiet_s=0.2)
    assert m.topic == t and m.partition == 0 and m.offset is not None and m.timestamp and m.timestamp > 0
    assert m.key == b"order-7" and m.value == {"price": "9.99", "ok": True}
    assert m.headers == {"a": "x", "b": b"\xff\x00"}


def test_unserialisable_value_fails_before_anything_is_sent(broker, topic):
    t = topic()
    tx = broker.transactional_producer(uid("tx"))
    with pytest.raises(SerializationError, match="object"), tx:
        tx.send(t, {"ok": 1})
        tx.send(t, {"bad": object()})
    with tx:
        tx.send(t, "end")
    got = drain(broker, [t], expect=1, until=lambda m: m.value == "end")
    assert [m.value for m in got] == ["end"]  # the good message of the failed transaction was aborted too


def test_consumer_created_after_producer_sees_everything_and_commits(broker, topic):
    t = topic()
    with broker.transactional_producer(uid("tx")) as tx:
        for i in range(10):
            tx.send(t, i)
    group = uid()
    consumer = broker.consumer(group, [t])
    first = [m.value for m in consumer.poll_iter(timeout_s=0.5, max_messages=6)]
    consumer.close()
    assert first == list(range(6))
    rest = broker.consumer(group, [t])  # same group: resumes after the 6 committed by poll_iter
    second = [m.value for m in rest.poll_iter(timeout_s=0.5, max_messages=4)]
    extra = rest.poll_batch(10, 0.5)
    rest.close()
    assert second == list(range(6, 10)) and extra == []


def test_groups_each_get_everything_and_members_split_partitions(broker, topic):
    t = topic(partitions=4)
    with broker.transactional_producer(uid("tx")) as tx:
        for i in range(100):
            tx.send(t, i, key=str(i))
    ui = drain(broker, [t], expect=100)
    md = drain(broker, [t], expect=100)
    assert sorted(m.value for m in ui) == list(range(100)) == sorted(m.value for m in md)

    shared = topic(partitions=4)
    group = uid()
    a, b = broker.consumer(group, [shared]), broker.consumer(group, [shared])
    seen: dict[str, list[int]] = {"a": [], "b": []}
    deadline = time.monotonic() + 40
    try:
        while not (len(a.assignment()) == 2 and len(b.assignment()) == 2):  # both joined: 2 partitions each
            assert time.monotonic() < deadline, (a.assignment(), b.assignment())
            a.poll_batch(10, 0.1)
            b.poll_batch(10, 0.1)
        assert sorted(a.assignment() + b.assignment()) == [(shared, p) for p in range(4)]
        with broker.transactional_producer(uid("tx")) as tx:
            for i in range(100):
                tx.send(shared, i, key=str(i))
        while len(seen["a"]) + len(seen["b"]) < 100 and time.monotonic() < deadline:
            for name, c in (("a", a), ("b", b)):
                for m in c.poll_batch(50, 0.1):
                    seen[name].append(m.value)
                    c.commit(m)
    finally:
        a.close()
        b.close()
    assert sorted(seen["a"] + seen["b"]) == list(range(100))  # each message to exactly one member
    assert seen["a"] and seen["b"]


def _ctp_handler(out_topic: str, fail_once: set[int]) -> Any:
    failed: set[int] = set()

    def handler(msg: Message) -> list[Message]:
        n = msg.value["n"]
        if n in fail_once and n not in failed:
            failed.add(n)
            raise ValueError(f"transient failure on {n}")
        return [
            Message(
                topic=out_topic,
                key=msg.key,
                value={"n": n, "doubled": 2 * n},
                headers={"source-offset": str(msg.offset)},
            )
        ]

    return handler


def test_consume_transform_produce_exactly_once_with_failures(broker, topic):
    src, out = topic(partitions=2), topic()
    n = 60
    with broker.transactional_producer(uid("tx")) as tx:
        for i in range(n):
            tx.send(src, {"n": i}, key=str(i % 5))
    group = uid("stock")
    fail_once = {i for i in range(n) if i % 7 == 6}  # every 7th message raises once
    proc = TransactionalProcessor(
        broker,
        group_id=group,
        input_topics=[src],
        transactional_id=uid("stock"),
        handler=_ctp_handler(out, fail_once),
        batch_size=16,
        backoff_s=0.01,
    )
    stats = proc.run(max_messages=n, idle_timeout_s=10)
    proc.close()
    assert stats.processed == n and stats.retries == len(fail_once) and stats.dead_lettered == 0

    outputs = drain(broker, [out], expect=n)
    counts = Counter(m.value["n"] for m in outputs)
    assert sorted(counts) == list(range(n)) and set(counts.values()) == {1}  # one output per input
    assert all(m.value["doubled"] == 2 * m.value["n"] for m in outputs)
    # input offsets committed exactly once: the group has nothing left, a new member reads nothing
    assert drain(broker, [src], expect=1, group=group, timeout_s=3, quiet_s=0.5) == []


def test_dead_letter_after_max_attempts_keeps_headers_and_moves_on(broker, topic):
    src, out = topic(), topic()
    with broker.transactional_producer(uid("tx")) as tx:
        for i in range(5):
            tx.send(src, {"n": i}, key=b"k", headers={"event-id": f"e{i}", "trace": "abc"})
    attempts: Counter[int] = Counter()

    def handler(msg: Message) -> list[Message]:
        attempts[msg.value["n"]] += 1
        if msg.value["n"] == 2:
            raise KeyError("poison")
        return [Message(topic=out, value=msg.value)]

    proc = TransactionalProcessor(
        broker,
        group_id=uid(),
        input_topics=[src],
        transactional_id=uid("p"),
        handler=handler,
        max_attempts=3,
        backoff_s=0.01,
        batch_size=10,
    )
    stats = proc.run(max_messages=5, idle_timeout_s=10)
    proc.close()
    assert attempts[2] == 3 and stats.dead_lettered == 1
    assert sorted(m.value["n"] for m in drain(broker, [out], expect=4)) == [0, 1, 3, 4]
    (dead,) = drain(broker, [f"{src}.DLT"], expect=1)
    assert dead.value == {"n": 2} and dead.key == b"k"
    assert dead.header("event-id") == "e2" and dead.header("trace") == "abc"
    assert dead.header("dlt-error-type") == "KeyError" and "poison" in dead.header("dlt-error")
    assert dead.header("dlt-attempts") == "3" and dead.header("dlt-original-topic") == src
    assert dead.header("dlt-original-offset") == "2"


def test_zombie_processor_is_fenced_and_its_output_invisible(broker, topic):
    src, out = topic(), topic()
    with broker.transactional_producer(uid("tx")) as tx:
        tx.send(src, {"n": 1})
    tid = uid("stock")
    successor: list[Any] = []

    def handler(msg: Message) -> list[Message]:
        # the zombie writes inside its open transaction; then a new instance with the same id starts
        zombie.producer.send(out, {"from": "zombie"})
        zombie.producer.flush()
        successor.append(broker.new_transactional_producer(tid))
        return []

    zombie = TransactionalProcessor(broker, group_id=uid(), input_topics=[src], transactional_id=tid, handler=handler)
    with pytest.raises(ProducerFencedError):
        zombie.run(max_messages=1, idle_timeout_s=10)
    zombie.close()
    with successor[0] as tx:
        tx.send(out, {"from": "successor"})
    got = drain(broker, [out], expect=1)
    assert [m.value for m in got] == [{"from": "successor"}]
    raw = drain(broker, [out], expect=2, isolation="read_uncommitted", quiet_s=0.5)
    assert {"from": "zombie"} in [m.value for m in raw]  # it really was written, then aborted


def test_processor_stops_on_event_after_finishing_its_transaction(broker, topic):
    src, out = topic(), topic()
    stop = threading.Event()
    with broker.transactional_producer(uid("tx")) as tx:
        for i in range(5):
            tx.send(src, {"n": i})

    def handler(msg: Message) -> list[Message]:
        if msg.value["n"] == 2:
            stop.set()
        return [Message(topic=out, value=msg.value)]

    proc = TransactionalProcessor(
        broker, group_id=uid(), input_topics=[src], transactional_id=uid("p"), handler=handler, batch_size=1
    )
    stats = proc.run(stop_event=stop)
    proc.close()
    assert stats.processed == 3
    assert [m.value["n"] for m in drain(broker, [out], expect=3)] == [0, 1, 2]


# ---------------------------------------------------------------- issue 15 item 12: InMemoryBroker parity


def test_transactional_offsets_have_gaps_for_commit_markers(broker, topic):
    t = topic()
    tx = broker.transactional_producer(uid("tx"))
    for batch in range(2):
        with tx:
            for i in range(3):
                tx.send(t, {"b": batch, "i": i})
    with pytest.raises(RuntimeError), tx:
        tx.send(t, "aborted")
        tx.flush()  # on the log (else librdkafka drops it before it takes an offset)
        raise RuntimeError("abort")
    with tx:
        tx.send(t, "last")
    got = drain(broker, [t], expect=7, until=lambda m: m.value == "last")
    # each commit/abort marker takes an offset: 0-2, [3], 4-6, [7], aborted 8, [9], 10
    assert [m.offset for m in got] == [0, 1, 2, 4, 5, 6, 10]


def test_a_new_member_gets_no_partition_until_the_old_member_polls_again(broker, topic):
    t = topic(partitions=2)
    group = uid()
    a = broker.consumer(group, [t])
    b = None
    try:
        deadline = time.monotonic() + 30
        while len(a.assignment()) < 2:
            assert time.monotonic() < deadline
            a.poll_batch(10, 0.2)
        b = broker.consumer(group, [t])
        for _ in range(3):  # a does not poll: the rebalance cannot complete, b reads nothing
            assert b.poll_batch(10, 0.3) == [] and b.assignment() == []
        assert len(a.assignment()) == 2  # a keeps its partitions until it rejoins
        while not (len(a.assignment()) == 1 and len(b.assignment()) == 1):
            assert time.monotonic() < deadline + 30, (a.assignment(), b.assignment())
            a.poll_batch(10, 0.2)
            b.poll_batch(10, 0.2)
    finally:
        a.close()
        if b is not None:
            b.close()


def test_a_second_processor_joining_mid_stream_duplicates_nothing(broker, broker_kind, topic):
    src, out = topic(partitions=4), topic()
    n = 80
    with broker.transactional_producer(uid("tx")) as tx:
        for i in range(n):
            tx.send(src, {"n": i}, key=str(i))
    group = uid("g")
    started = threading.Event()
    handled: Counter[str] = Counter()

    def make(name: str) -> TransactionalProcessor:
        def handler(m: Message) -> list[Message]:
            handled[name] += 1
            if handled["a"] >= 10:
                started.set()
            time.sleep(0.01)
            return [Message(topic=out, key=m.key, value=m.value)]

        return TransactionalProcessor(
            broker, group_id=group, input_topics=[src], transactional_id=uid(name), handler=handler, batch_size=5
        )

    procs = {"a": make("a"), "b": make("b")}
    stats: dict[str, Any] = {}

    def run(name: str) -> None:
        stats[name] = procs[name].run(idle_timeout_s=4 if broker_kind == "kafka" else 0.5, handle_signals=False)

    ta = threading.Thread(target=run, args=("a",))
    ta.start()
    assert started.wait(30)
    tb = threading.Thread(target=run, args=("b",))
    tb.start()
    ta.join(90)
    tb.join(90)
    for p in procs.values():
        p.close()
    counts = Counter(m.value["n"] for m in drain(broker, [out], expect=n))
    assert sorted(counts) == list(range(n)) and set(counts.values()) == {1}, counts  # 0 duplicates
    assert stats["a"].processed + stats["b"].processed == n


def test_broker_side_errors_are_messaging_errors_on_both_brokers(broker, topic):
    t = topic()
    consumer = broker.consumer(uid(), [t])
    try:
        with pytest.raises(MessagingError):
            consumer.seek(t, 5, 0)  # not assigned (no such partition)
    finally:
        consumer.close()
    tx = broker.transactional_producer(uid("tx"))
    with pytest.raises(MessagingError), tx:
        tx.send(t, "x", partition=7)  # the topic has one partition
    with pytest.raises(InvalidTopicError):
        tx.send("bad topic!", 1)  # refused before anything is sent, as on Kafka


def test_stale_group_member_offsets_are_refused():
    """Kafka refuses commits from a member of an older generation (ILLEGAL_GENERATION/UNKNOWN_MEMBER_ID);
    on a real broker this needs max.poll.interval.ms to pass, so it runs on the in-memory broker only."""
    from distkit.messaging import InMemoryBroker

    broker = InMemoryBroker(rebalance_timeout_s=0.2)
    broker.create_topic("t", 2)
    with broker.transactional_producer("seed") as tx:
        for i in range(4):
            tx.send("t", i, partition=i % 2)
    a = broker.consumer("g", ["t"])
    (m,) = a.poll_batch(1, 0.1)
    b = broker.consumer("g", ["t"])
    assert b.poll_batch(10, 0.5)  # a never polled again: expelled after 0.2 s, b owns everything
    with pytest.raises(CommitFailedError):
        a.commit(m)
    tx = broker.transactional_producer("p")
    with pytest.raises(TransactionAbortedError, match="refused"), tx:
        tx.send("out", 1)
        tx.send_offsets(a, {("t", m.partition): m.offset + 1})
    assert broker.consumer("fresh", ["out"]).poll_batch(10, 0.1) == []  # the aborted output never shows
    a.close()
    b.close()
