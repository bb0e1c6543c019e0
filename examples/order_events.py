"""Order flow with events: outbox in the order service, exactly-once stock reservation, two independent readers.

Runs on embedded defaults (SQLite + InMemoryBroker); swap in PostgreSQL and ``KafkaBroker`` and nothing else
changes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select
from sqlalchemy.orm import Session

from distkit.messaging import InMemoryBroker, Message, Outbox, OutboxRelay, TransactionalProcessor


def main() -> None:
    broker = InMemoryBroker()
    broker.create_topic("orders", partitions=2)
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'shop.db'}")
        md = MetaData()
        orders = Table("orders", md, Column("id", Integer, primary_key=True), Column("status", String(20)))
        md.create_all(engine)
        outbox = Outbox(engine)

        for order_id in (1, 2, 3):
            try:
                with Session(engine) as session, session.begin():
                    session.execute(orders.insert().values(id=order_id, status="created"))
                    outbox.add(
                        session, topic="orders", key=str(order_id), value={"order_id": order_id, "qty": order_id * 2}
                    )
                    if order_id == 2:
                        raise RuntimeError("card declined")
            except RuntimeError as exc:
                print(f"order {order_id}: rolled back ({exc}); no event written")
        with engine.connect() as conn:
            print("orders in the database:", conn.execute(select(orders.c.id)).scalars().all())

        relay = OutboxRelay(outbox, broker)
        print("outbox relay published", relay.run_once(), "events; pending now", outbox.pending())
        engine.dispose()

    calls = {"n": 0}

    def reserve(msg: Message) -> list[Message]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TimeoutError("inventory DB timed out")  # first try fails: the transaction aborts and retries
        return [
            Message(
                topic="stock-reserved",
                key=msg.key,
                value={"order_id": msg.value["order_id"], "reserved": msg.value["qty"]},
            )
        ]

    proc = TransactionalProcessor(
        broker, group_id="stock", input_topics=["orders"], transactional_id="stock-1", handler=reserve, backoff_s=0.01
    )
    stats = proc.run(idle_timeout_s=0.2)
    proc.close()
    print(f"stock processor: {stats.processed} inputs, {stats.retries} retry, {stats.transactions} transactions")

    for group in ("ui", "md"):  # two systems, each sees every reservation exactly once
        consumer = broker.consumer(group_id=group, topics=["stock-reserved"])
        seen = [m.value for m in consumer.poll_iter(timeout_s=0.05, idle_timeout_s=0.1)]
        consumer.close()
        print(f"group {group!r} saw {seen}")
