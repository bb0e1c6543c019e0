"""User code typed against the protocols; ``test_typing.py`` checks it with ``mypy --strict`` (issue 16 §5):
both brokers must be accepted where a ``Broker`` is expected, and ``with producer as tx`` must keep the type."""

from __future__ import annotations

from distkit.messaging import (
    Broker,
    Consumer,
    InMemoryBroker,
    KafkaBroker,
    Message,
    TransactionalProcessor,
    TransactionalProducer,
)
from distkit.messaging.kafka import KafkaTransactionalProducer
from distkit.messaging.memory import MemoryTransactionalProducer


def publish(broker: Broker, topic: str) -> TransactionalProducer:
    with broker.transactional_producer("typed-1") as tx:
        tx.send(topic, {"n": 1}, key="k", headers={"event-id": "e-1"})
        tx.send_raw(topic, None, key=b"k")  # a tombstone
    consumer: Consumer = broker.consumer("typed", [topic])
    consumer.close()
    return tx


def processor(broker: Broker) -> TransactionalProcessor:
    return TransactionalProcessor(broker, "g", ["in"], "tid", handler=lambda m: [Message("out", m.value)])


def memory() -> MemoryTransactionalProducer:
    broker = InMemoryBroker()
    publish(broker, "orders")
    processor(broker)
    with broker.transactional_producer("typed-2") as tx:  # the concrete type survives __enter__
        return tx


def kafka() -> KafkaTransactionalProducer:
    broker = KafkaBroker("127.0.0.1:9092")
    publish(broker, "orders")
    processor(broker)
    with broker.transactional_producer("typed-3") as tx:
        return tx
