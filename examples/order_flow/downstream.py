"""A downstream service (say, shipping) that counts the "order placed" events it reads.

It reads ``read_committed`` in its own consumer group, so it sees an order's event only if the order
service committed the Kafka transaction, never one that was aborted. How does a reader know it has seen
*everything* decided so far, without sleeping and hoping? :func:`close_till` commits one marker into every
partition after the orders; a partition's marker is delivered only after every transaction before it was
committed or aborted, so once the counter holds a marker from each partition, its count is final.
"""

from __future__ import annotations

import time
from collections import Counter

from distkit.messaging import Broker


def close_till(broker: Broker, topic: str, partitions: int, tid: str, token: str) -> None:
    """Commit a ``till_closed`` marker carrying ``token`` into each of the topic's partitions."""
    with broker.transactional_producer(tid) as tx:
        for p in range(partitions):
            tx.send(topic, {"type": "till_closed", "token": token}, partition=p)


class OrderCounter:
    """Counts order ids seen on ``topic`` (group ``group``); ``seen[order_id]`` is how often each arrived."""

    def __init__(self, broker: Broker, topic: str, group: str, isolation_level: str = "read_committed") -> None:
        self.consumer = broker.consumer(group, [topic], isolation_level=isolation_level)
        self.seen: Counter[int] = Counter()
        self.markers: dict[str, set[int]] = {}

    def read_until_closed(self, token: str, partitions: int, timeout_s: float = 30.0) -> bool:
        """Read until the ``token`` marker came from every partition (``True``), or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        got = self.markers.setdefault(token, set())
        while len(got) < partitions and time.monotonic() < deadline:
            msg = self.consumer.poll(0.2)
            if msg is None:
                continue
            event = msg.value
            if event.get("type") == "order_placed":
                self.seen[int(event["order_id"])] += 1
            elif event.get("type") == "till_closed" and msg.partition is not None:
                self.markers.setdefault(event["token"], set()).add(msg.partition)
            self.consumer.commit(msg)
        return len(got) >= partitions

    def close(self) -> None:
        self.consumer.close()
