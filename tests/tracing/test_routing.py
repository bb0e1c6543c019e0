"""DB routing from the request context: 100 concurrent requests, two real PostgreSQL databases, writes through
executor tasks and a Kafka consumer; read-your-writes with a replica; a clear error without a shard."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Integer, String, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from distkit.errors import ShardNotSelectedError
from distkit.tracing import ContextExecutor, inject_headers, request_context, traced_handler
from distkit.tracing.routing import Shard, ShardRouter


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "routed_rows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(20))
    shard: Mapped[str] = mapped_column(String(20))


@pytest.fixture
def engines(two_databases: tuple[str, str]) -> Iterator[dict[str, Any]]:
    out = {"db_a": create_engine(two_databases[0], pool_size=10), "db_b": create_engine(two_databases[1], pool_size=10)}
    for e in out.values():
        Base.metadata.create_all(e)
    yield out
    for e in out.values():
        e.dispose()


def _rows(engine: Any) -> list[tuple[int, str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT id, source, shard FROM routed_rows ORDER BY id"))]


def test_hundred_concurrent_requests_land_in_their_own_shard(
    engines: dict[str, Any], kafka_bootstrap: str, new_topic: Any
) -> None:
    from distkit.messaging import KafkaBroker

    router = ShardRouter(engines)
    Session = router.sessionmaker()
    topic = new_topic(partitions=2)
    broker = KafkaBroker(kafka_bootstrap, timeout_s=15)
    producer = broker.producer()
    barrier = threading.Barrier(100)
    errors: list[BaseException] = []

    def write(i: int, source: str) -> None:
        with Session() as s:
            s.add(Row(id=i, source=source, shard=f"db_{'ab'[i % 2]}"))
            s.commit()

    with ContextExecutor(max_workers=8) as pool:

        def request(i: int) -> None:
            try:
                with request_context(shard=f"db_{'ab'[i % 2]}"):
                    barrier.wait(timeout=30)
                    pool.submit(write, i, "executor").result()
                    producer.send(topic, {"id": 1000 + i}, headers=inject_headers())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=request, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    producer.flush(15)
    assert errors == []

    @traced_handler()
    def consume(msg: Any) -> None:  # no request context of its own: the shard comes from the baggage
        i = msg.value["id"]
        with Session() as s:
            s.add(Row(id=i, source="kafka", shard=router.current_shard()))
            s.commit()

    consumer = broker.consumer(f"g-{uuid.uuid4().hex[:8]}", [topic])
    done = 0
    try:
        for _ in range(600):
            for msg in consumer.poll_batch(100, 0.2):
                consume(msg)
                done += 1
            if done >= 100:
                break
    finally:
        consumer.close()
        broker.close()
    assert done == 100

    for name, engine in engines.items():
        rows = _rows(engine)
        assert len(rows) == 100  # 50 from executor tasks + 50 from the consumer
        assert {shard for _, _, shard in rows} == {name}, f"a row of another shard landed in {name}"
        mine = [i for i in range(100) if f"db_{'ab'[i % 2]}" == name]
        assert sorted(i for i, src, _ in rows if src == "executor") == mine
        assert sorted(i - 1000 for i, src, _ in rows if src == "kafka") == mine


def test_reads_use_the_replica_until_the_request_writes(engines: dict[str, Any]) -> None:
    primary, replica = engines["db_a"], engines["db_b"]  # a stand-in replica we can tell apart
    with replica.begin() as conn:
        conn.execute(text("INSERT INTO routed_rows VALUES (1, 'replica', 'x')"))
    with primary.begin() as conn:
        conn.execute(text("INSERT INTO routed_rows VALUES (1, 'primary', 'x')"))
    router = ShardRouter({"orders": Shard(primary=primary, replicas=[replica])})
    Session = router.sessionmaker()

    def read_source() -> str:
        with Session() as s:
            return s.execute(select(Row.source).where(Row.id == 1)).scalar_one()

    with request_context(shard="orders"), ContextExecutor(max_workers=2) as pool:
        assert read_source() == "replica"
        with Session() as s:
            s.add(Row(id=2, source="new", shard="orders"))
            s.commit()
        assert read_source() == "primary"  # read-your-writes in the same request...
        assert pool.submit(read_source).result() == "primary"  # ...in its tasks too
    with request_context(shard="orders"):
        assert read_source() == "replica"  # a new request starts on the replica again
    assert [r[0] for r in _rows(primary)] == [1, 2] and [r[0] for r in _rows(replica)] == [1]


def test_no_shard_in_context_is_a_clear_error(engines: dict[str, Any]) -> None:
    Session = ShardRouter(engines).sessionmaker()
    with pytest.raises(ShardNotSelectedError, match="request_context"), Session() as s:
        s.add(Row(id=1, source="x", shard="x"))
        s.commit()
    with request_context(shard="db_zz"), pytest.raises(ShardNotSelectedError, match="db_a"), Session() as s:
        s.execute(select(Row))
    default = ShardRouter(engines, default="db_b").sessionmaker()
    with default() as s:
        s.add(Row(id=5, source="default", shard="db_b"))
        s.commit()
    assert _rows(engines["db_b"]) == [(5, "default", "db_b")] and _rows(engines["db_a"]) == []
    with pytest.raises(ShardNotSelectedError):
        ShardRouter(engines, default="nope")
