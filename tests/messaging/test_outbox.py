"""Transactional outbox: PostgreSQL + real Kafka (and SQLite + InMemoryBroker for the demo path)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select
from sqlalchemy.orm import Session

from distkit.errors import InvalidArgumentError, InvalidTopicError, MessageTooLargeError, SerializationError
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


def test_unknown_topic_row_is_recorded_then_dead_lettered_while_others_flow(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'o.db'}")
    outbox = Outbox(engine)
    broker = InMemoryBroker(auto_create_topics=False)
    broker.create_topic("known")
    with engine.begin() as conn:
        outbox.add(conn, topic="missing-topic", key="a", value=1)
        outbox.add(conn, topic="known", key="b", value=2)
    relay = OutboxRelay(outbox, broker, max_attempts=2)
    assert relay.run_once() == 1  # the good row is not held hostage
    assert outbox.pending() == 1
    with engine.connect() as c:
        row = c.execute(select(outbox.table).where(outbox.table.c.sent_at.is_(None))).one()
    assert row.attempts == 1 and "auto-create is off" in row.last_error and "UnknownTopicError" in row.last_error
    assert relay.run_once() == 0 and outbox.pending() == 0 and relay.stats.dead_lettered == 1
    with engine.connect() as c:
        (dead,) = c.execute(select(outbox.dead)).all()
    assert dead.topic == "missing-topic" and dead.attempts == 2


def test_headers_are_utf8_and_bytes_stay_bytes(setup):
    engine, broker, topic = setup
    outbox = Outbox(engine)
    headers = {"price": "€5", "city": "Zürich", "raw": b"\xff\x00\xe9", "emoji": "🚚"}
    with engine.begin() as conn:
        event_id = outbox.add(conn, topic=topic, key="1", value={"n": 1}, headers=headers)
    relay = OutboxRelay(outbox, broker)
    assert relay.run_once() == 1
    relay.close()
    (m,) = drain(broker, [topic], expect=1)
    assert m.headers == {**headers, "event-id": event_id}  # str headers arrive as str: they were sent UTF-8
    assert m.header("city") == "Zürich" and m.headers["raw"] == b"\xff\x00\xe9"


def test_add_refuses_what_the_broker_would_refuse(setup):
    engine, _broker, _topic = setup
    outbox = Outbox(engine)
    bad: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"topic": "bad topic!"}, InvalidTopicError),
        ({"topic": "x" * 250}, InvalidTopicError),
        ({"value": "x" * 1_000_001}, MessageTooLargeError),
        ({"headers": {"h": "\ud800"}}, SerializationError),  # a lone surrogate is not UTF-8
        ({"headers": {"h": 5}}, SerializationError),
        ({"headers": {"": "x"}}, SerializationError),
        ({"event_id": "e" * 65}, InvalidArgumentError),
    ]
    for override, error in bad:
        kwargs: dict[str, Any] = {"topic": "orders", "value": 1, **override}
        with pytest.raises(error), engine.begin() as conn:
            outbox.add(conn, **kwargs)
    assert outbox.pending() == 0


def test_poison_rows_are_dead_lettered_after_max_attempts_and_the_relay_keeps_going(setup):
    """Rows ``add`` would refuse, written by other code: an invalid topic, a record over the broker's
    limit, undecodable stored headers. Each is retried ``max_attempts`` times, then parked; the rest flow."""
    engine, broker, topic = setup
    outbox = Outbox(engine)
    t = outbox.table
    now = dt.datetime.now(dt.timezone.utc)

    def raw_row(conn: Any, event_id: str, topic_name: str, key: bytes, payload: bytes, headers: str = "[]") -> None:
        conn.execute(
            t.insert().values(event_id=event_id, topic=topic_name, message_key=key, payload=payload,
                              headers=headers, created_at=now, attempts=0)
        )

    with engine.begin() as conn:
        outbox.add(conn, topic=topic, key="a", value={"seq": 0})
        raw_row(conn, "bad-topic", "bad topic!", b"p", b"1")
        raw_row(conn, "too-big", topic, b"q", b"x" * 1_100_000)
        raw_row(conn, "bad-headers", topic, b"r", b"1", headers='[["h", "b", "not base64!"]]')
        outbox.add(conn, topic=topic, key="q", value={"seq": 1})  # same key as a poison row: waits behind it
        outbox.add(conn, topic=topic, key="a", value={"seq": 2})
    relay = OutboxRelay(outbox, broker, max_attempts=3)
    published = [relay.run_once() for _ in range(3)]
    with engine.begin() as conn:
        outbox.add(conn, topic=topic, key="a", value={"seq": 3})  # later events still flow
    published.append(relay.run_once())
    relay.close()
    assert sum(published) == 4 and outbox.pending() == 0
    assert relay.stats.dead_lettered == 3 and relay.stats.failed_attempts == 9 and relay.stats.published == 4
    with engine.connect() as c:
        dead = {r.event_id: r for r in c.execute(select(outbox.dead)).all()}
    assert set(dead) == {"bad-topic", "too-big", "bad-headers"}
    assert all(r.attempts == 3 for r in dead.values())
    assert "InvalidTopicError" in dead["bad-topic"].last_error
    assert "MessageTooLargeError" in dead["too-big"].last_error
    assert "headers" in dead["bad-headers"].last_error
    got = drain(broker, [topic], expect=4)
    assert sorted(m.value["seq"] for m in got) == [0, 1, 2, 3]  # each exactly once
    q = [m for m in got if m.key == b"q"]
    assert len(q) == 1 and q[0].value == {"seq": 1}
