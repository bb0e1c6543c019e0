"""Kafka transactions, consume-transform-produce with exactly-once output, and the transactional outbox.

>>> from distkit.messaging import InMemoryBroker, Message
>>> broker = InMemoryBroker()            # or KafkaBroker(bootstrap="127.0.0.1:9092"): same protocol
>>> with broker.transactional_producer("order-svc-1") as tx:
...     tx.send("orders", {"order_id": 42}, key=b"42", headers={"event-id": "e-1"})
>>> consumer = broker.consumer(group_id="mail", topics=["orders"])
>>> [m.value for m in consumer.poll_iter(timeout_s=0.01, max_messages=1)]
[{'order_id': 42}]

``KafkaBroker``, ``Outbox`` and ``OutboxRelay`` import confluent-kafka / SQLAlchemy on first use only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distkit._lazy import lazy_getattr
from distkit.messaging.broker import Broker, Consumer, Producer, TransactionalProducer
from distkit.messaging.memory import InMemoryBroker
from distkit.messaging.message import Codec, JsonCodec, Message
from distkit.messaging.processor import ProcessorStats, TransactionalProcessor

if TYPE_CHECKING:
    from distkit.messaging.kafka import KafkaBroker
    from distkit.messaging.outbox import Outbox, OutboxRelay

__all__ = [
    "Broker",
    "Codec",
    "Consumer",
    "InMemoryBroker",
    "JsonCodec",
    "KafkaBroker",
    "Message",
    "Outbox",
    "OutboxRelay",
    "ProcessorStats",
    "Producer",
    "TransactionalProcessor",
    "TransactionalProducer",
]

_LAZY = {
    "KafkaBroker": "distkit.messaging.kafka",
    "Outbox": "distkit.messaging.outbox",
    "OutboxRelay": "distkit.messaging.outbox",
}
__getattr__ = lazy_getattr(__name__, _LAZY)
