"""Did a dead order service's Kafka commit go through? The topic knows.

A service can die after Kafka committed an order's transaction but before the saga log recorded the commit
step. The log cannot tell that order from one whose transaction never committed; the orders topic can. Once the
successor has fenced the dead service's transactional ids (``OrderService`` does at start, with the same
stable ids), Kafka has finished the dead transaction: committed if its commit had been issued, aborted
otherwise. So the answer is final, and :func:`event_committed` reads it: it commits a marker into every
partition and reads ``read_committed`` up to those markers; a partition's marker is delivered only after every
transaction before it is decided, so "no event" then means "never visible", never "not visible yet".
"""

from __future__ import annotations

import queue
import time
import uuid

from distkit.errors import MessagingError
from distkit.messaging import Broker
from examples.order_flow.downstream import close_till


class OutcomeUnknown(Exception):
    """The topic could not be read up to its end in time: decide nothing yet (the saga step retries)."""


def event_committed(broker: Broker, topic: str, partitions: int, event_id: str, *, tids: queue.Queue[str],
                    group: str, timeout_s: float = 10.0) -> bool:
    """Whether a committed message with header ``event-id: event_id`` is on ``topic``. The markers go out on a
    transactional id borrowed from ``tids`` (the service's pool); the reader is a new group ``<group>-<uuid>``
    that starts at the beginning (a real service would seek to the order's time instead)."""
    token = f"audit-{uuid.uuid4().hex}"
    tid = tids.get()
    try:
        close_till(broker, topic, partitions, tid, token)
        consumer = broker.consumer(f"{group}-{token}", [topic])  # read_committed, from the earliest offset
    except MessagingError as exc:  # not an answer: an undecided check must never roll an order back
        raise OutcomeUnknown(f"{topic}: cannot check {event_id}: {exc}") from exc
    finally:
        tids.put(tid)
    try:
        found, ends = False, set[int | None]()
        deadline = time.monotonic() + timeout_s
        while len(ends) < partitions:
            if time.monotonic() > deadline:
                raise OutcomeUnknown(f"{topic} not read up to its end within {timeout_s} s: {event_id} undecided")
            try:
                msg = consumer.poll(0.2)
            except MessagingError as exc:
                raise OutcomeUnknown(f"{topic}: cannot check {event_id}: {exc}") from exc
            if msg is None:
                continue
            found = found or msg.header("event-id") == event_id
            value = msg.value if isinstance(msg.value, dict) else {}
            if value.get("type") == "till_closed" and value.get("token") == token:
                ends.add(msg.partition)
        return found
    finally:
        consumer.close()
