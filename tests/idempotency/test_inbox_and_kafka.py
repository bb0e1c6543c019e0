"""Transactional inbox on PostgreSQL, and a real Kafka consumer deduplicated by @idempotent."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from distkit.idempotency import Inbox, SqlIdempotencyStore, idempotent
from tests.idempotency._workers import inbox_deliver


@pytest.fixture
def reservations(pg_engine):
    with pg_engine.begin() as c:
        c.execute(text("CREATE TABLE reservations (id serial primary key, message_id text, qty int)"))
    return pg_engine


@pytest.fixture(params=["postgresql", "sqlite"])
def business_db(request, tmp_path):
    """The business database: PostgreSQL, or a SQLite file (pysqlite, as the demo uses)."""
    if request.param == "postgresql":
        yield request.getfixturevalue("reservations")
        return
    engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    with engine.begin() as c:
        c.execute(text("CREATE TABLE reservations (id integer primary key, message_id text, qty int)"))
    yield engine
    engine.dispose()


def count(engine, sql="SELECT count(*) FROM reservations"):
    with engine.connect() as c:
        return c.execute(text(sql)).scalar_one()


def test_business_row_and_inbox_row_commit_together(business_db):
    inbox = Inbox(business_db)
    for _ in range(3):  # the same delivery three times
        with Session(business_db) as s, s.begin():
            with inbox.receive(s, message_id="evt-1", consumer="stock") as fresh:
                if fresh:
                    s.execute(text("INSERT INTO reservations (message_id, qty) VALUES ('evt-1', 2)"))
    assert count(business_db) == 1
    assert count(business_db, "SELECT count(*) FROM distkit_inbox") == 1
    with Session(business_db) as s, s.begin():  # another consumer group processes it independently
        with inbox.receive(s, message_id="evt-1", consumer="mail") as fresh:
            assert fresh


@pytest.mark.parametrize("read_first", [False, True], ids=["plain", "after-a-select"])
def test_crash_between_inbox_and_business_write_leaves_neither(business_db, read_first):
    """On SQLite before the fix the savepoint's RELEASE committed the inbox row on its own: after the rollback
    the row stayed, the redelivery got fresh=False and the message was lost."""
    inbox = Inbox(business_db)
    with pytest.raises(RuntimeError), Session(business_db) as s, s.begin():
        if read_first:
            s.execute(text("SELECT count(*) FROM reservations"))
        with inbox.receive(s, message_id="evt-2", consumer="stock") as fresh:
            assert fresh
            s.execute(text("INSERT INTO reservations (message_id, qty) VALUES ('evt-2', 1)"))
            raise RuntimeError("process crashed mid-transaction")
    assert count(business_db) == 0
    assert count(business_db, "SELECT count(*) FROM distkit_inbox") == 0
    with Session(business_db) as s, s.begin():  # the redelivery is therefore fresh
        with inbox.receive(s, message_id="evt-2", consumer="stock") as fresh:
            assert fresh
            s.execute(text("INSERT INTO reservations (message_id, qty) VALUES ('evt-2', 1)"))
    assert count(business_db) == 1


def test_inbox_on_a_sqlite_connection_rolls_back_too(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'conn.db'}")
    inbox = Inbox(engine)
    with pytest.raises(RuntimeError), engine.connect() as conn, conn.begin():
        with inbox.receive(conn, message_id="evt-9", consumer="stock") as fresh:
            assert fresh
            raise RuntimeError("crash")
    with engine.connect() as conn, conn.begin():
        with inbox.receive(conn, message_id="evt-9", consumer="stock") as fresh:
            assert fresh
    engine.dispose()


def test_hundred_duplicates_from_four_processes_make_one_business_row(reservations, database_url, pg_schema):
    Inbox(reservations)  # create the table before the race
    ctx = multiprocessing.get_context("fork")  # fast start: the children build their own engines
    start = ctx.Barrier(5)  # 4 children + this test
    procs = [ctx.Process(target=inbox_deliver, args=(database_url, pg_schema, "evt-3", 25, start)) for _ in range(4)]
    for p in procs:
        p.start()
    start.wait(60)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert count(reservations) == 1


def test_kafka_event_delivered_three_times_writes_one_row(kafka_bootstrap, new_topic, reservations):
    from confluent_kafka import Consumer, Producer

    topic = new_topic()
    event_id = f"evt-{uuid.uuid4().hex}"
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for _ in range(3):  # an at-least-once producer retried twice
        producer.produce(topic, key=b"order-7", value=b'{"order_id": 7, "qty": 2}', headers={"event-id": event_id})
    producer.flush(15)

    store = SqlIdempotencyStore(reservations)

    @idempotent(store, key=lambda msg: dict(msg.headers())["event-id"].decode(), payload=lambda msg: msg.value())
    def handle(msg):
        with reservations.begin() as c:
            c.execute(text("INSERT INTO reservations (message_id, qty) VALUES (:m, 2)"), {"m": event_id})
        return {"reserved": 2}

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    results = []
    deadline = time.monotonic() + 30
    try:
        while len(results) < 3 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            results.append(handle(msg))
            consumer.commit(msg)
    finally:
        consumer.close()
    assert results == [{"reserved": 2}] * 3
    assert count(reservations) == 1


def test_inbox_on_sqlite_with_sqlalchemys_own_recipe(tmp_path):
    """An application that already applies SQLAlchemy's pysqlite recipe (isolation_level=None + BEGIN on begin)
    gets the same all-or-nothing behaviour; receive issues no second BEGIN."""
    from sqlalchemy import event

    engine = create_engine(f"sqlite:///{tmp_path / 'recipe.db'}")

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN")

    with engine.begin() as c:
        c.execute(text("CREATE TABLE reservations (id integer primary key, message_id text, qty int)"))
    inbox = Inbox(engine)
    with pytest.raises(RuntimeError), Session(engine) as s, s.begin():
        with inbox.receive(s, message_id="evt-r", consumer="stock") as fresh:
            assert fresh
            s.execute(text("INSERT INTO reservations (message_id, qty) VALUES ('evt-r', 1)"))
            raise RuntimeError("crash")
    assert count(engine) == 0 and count(engine, "SELECT count(*) FROM distkit_inbox") == 0
    engine.dispose()
