"""Transactional outbox: PostgreSQL + real Kafka (and SQLite + InMemoryBroker for the demo path)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select
from sqlalchemy.orm import Session

from distkit.errors import InvalidArgumentError, MessagingError, SerializationError
from distkit.idempotency import SqlIdempotencyStore, idempotent
from distkit.messaging import InMemoryBroker, Message, Outbox, OutboxRelay
from tests.messaging.conftest import drain, uid


def orders_table(engine: Any) -> Table:
    md = MetaData()
    t = Table("orders", md, Column("id", Integer, primary_key=True), Column("status", String(20)))
    md.create_all(engine)
    return t


@pytest.fixture(params=["postgres+kafka", "sqlite+memory"])
def setup(request: Any, tmp_path: Any) -> Any:
    if request.param == "postgres+kafka":
        from distkit.messaging import KafkaBroker

        engine = request.getfixturevalue("pg_engine")
        broker = KafkaBroker(request.getfixturevalue("kafka_bootstrap"), timeout_s=15)
        topic = request.getfixturevalue("new_topic")(2)
    else:
        engine = create_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
        broker = InMemoryBroker()
        topic = uid("orders")
        broker.create_topic(topic, 2)
    yield engine, broker, topic
    broker.close()


def test_business_row_and_event_commit_or_roll_back_together(setup):
    engine, broker, topic = setup
    orders, outbox = orders_table(engine), Outbox(engine)
    with Session(engine) as s, s.begin():
        s.execute(orders.insert().values(id=1, status="created"))
        event_id = outbox.add(s, topic=topic, key="1", value={"order_id": 1, "status": "created"})
    with pytest.raises(RuntimeError), Session(engine) as s, s.begin():
        s.execute(orders.insert().values(id=2, status="created"))
        outbox.add(s, topic=topic, key="2", value={"order_id": 2})
        raise RuntimeError("payment declined")
    with engine.connect() as c:
        assert c.execute(select(orders.c.id)).scalars().all() == [1]
    assert outbox.pending() == 1  # the rolled-back order left no event

    relay = OutboxRelay(outbox, broker)
    assert relay.run_once() == 1 and relay.run_once() == 0
    relay.close()
    assert outbox.pending() == 0
    (m,) = drain(broker, [topic], expect=1)
    assert m.key == b"1" and m.value == {"order_id": 1, "status": "created"} and m.header("event-id") == event_id


class CrashAfterPublish(OutboxRelay):
    """A relay process that dies after Kafka acknowledged the batch but before the rows are marked sent."""

    def _mark_sent(self, conn: Any, ids: list[int]) -> None:
        raise KeyboardInterrupt("relay killed")


def test_relay_killed_before_marking_republishes_same_event_ids_in_key_order(setup):
    engine, broker, topic = setup
    outbox = Outbox(engine)
    with engine.begin() as conn:  # a Connection works as well as an ORM Session
        for i in range(30):
            outbox.add(conn, topic=topic, key=f"order-{i % 3}", value={"order": i % 3, "seq": i})

    crashing = CrashAfterPublish(outbox, broker, batch_size=20)
    with pytest.raises(KeyboardInterrupt):
        crashing.run_once()
    crashing.close()
    assert outbox.pending() == 30  # nothing marked: the transaction holding the row locks rolled back

    relay = OutboxRelay(outbox, broker, batch_size=20)
    assert relay.run_once() == 20 and relay.run_once() == 10 and relay.run_once() == 0
    relay.close()

    got = drain(broker, [topic], expect=50)
    assert len(got) == 50  # 20 published twice: at-least-once
    handled: list[Message] = []

    @idempotent(SqlIdempotencyStore(engine), key=lambda m: m.header("event-id"))  # how consumers dedupe
    def consume(m: Message) -> int:
        handled.append(m)
        return m.value["seq"]

    for m in sorted(got, key=lambda m: (m.partition, m.offset)):
        consume(m)
    unique = handled
    assert sorted(m.value["seq"] for m in unique) == list(range(30))
    for key in {m.key for m in unique}:  # per key (one partition): crashed batch, its replay, then the rest
        log = [m.value["seq"] for m in sorted(got, key=lambda m: m.offset) if m.key == key]
        first, rest = sorted({s for s in log if s < 20}), sorted(s for s in log if s >= 20)
        assert log == first + first + rest


def test_bad_values_fail_the_business_transaction_not_the_relay(setup):
    engine, _broker, topic = setup
    outbox = Outbox(engine)
    with pytest.raises(SerializationError), Session(engine) as s, s.begin():
        outbox.add(s, topic=topic, value={"when": object()})
    with pytest.raises(InvalidArgumentError, match="event_id"), Session(engine) as s, s.begin():
        outbox.add(s, topic=topic, value=1, headers={"event-id": "x"})
    assert outbox.pending() == 0


def test_publish_failure_keeps_rows_and_records_the_error(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'o.db'}")
    outbox = Outbox(engine)
    broker = InMemoryBroker(auto_create_topics=False)
    with engine.begin() as conn:
        outbox.add(conn, topic="missing-topic", value=1)
    relay = OutboxRelay(outbox, broker)
    with pytest.raises(MessagingError, match="missing-topic"):
        relay.run_once()
    assert outbox.pending() == 1
    with engine.connect() as c:
        row = c.execute(select(outbox.table)).one()
    assert row.attempts == 1 and "auto-create is off" in row.last_error
