"""One behaviour suite for both brokers: every test taking ``broker`` runs on InMemoryBroker and real Kafka."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from distkit.messaging import InMemoryBroker, Message


@pytest.fixture(params=["memory", "kafka"])
def broker_kind(request: Any) -> str:
    return str(request.param)


@pytest.fixture
def broker(broker_kind: str, request: Any) -> Iterator[Any]:
    if broker_kind == "memory":
        b: Any = InMemoryBroker()
    else:
        from distkit.messaging import KafkaBroker

        b = KafkaBroker(request.getfixturevalue("kafka_bootstrap"), timeout_s=15)
    yield b
    b.close()


@pytest.fixture
def topic(broker: Any, broker_kind: str, request: Any) -> Callable[..., str]:
    """``topic(partitions=1)`` → a fresh topic on the broker under test."""

    def make(partitions: int = 1) -> str:
        if broker_kind == "kafka":
            return str(request.getfixturevalue("new_topic")(partitions))
        name = f"t-{uuid.uuid4().hex[:10]}"
        broker.create_topic(name, partitions)
        return name

    return make


def uid(prefix: str = "g") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def drain(
    broker: Any,
    topics: list[str],
    *,
    expect: int,
    group: str | None = None,
    isolation: str = "read_committed",
    timeout_s: float = 30.0,
    quiet_s: float = 1.0,
    until: Callable[[Message], bool] | None = None,
) -> list[Message]:
    """Read with a fresh consumer until ``expect`` messages (or ``until`` matches), then keep polling
    ``quiet_s`` more to catch any extra message; the consumer commits nothing."""
    if isinstance(broker, InMemoryBroker):  # everything is visible at once: no need to wait for stragglers
        timeout_s, quiet_s = min(timeout_s, 2.0), min(quiet_s, 0.05)
    consumer = broker.consumer(group or uid("drain"), topics, isolation_level=isolation)
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll_batch(500, 0.2)
            got.extend(batch)
            if len(got) >= expect or (until is not None and any(until(m) for m in batch)):
                break
        quiet_end = time.monotonic() + quiet_s
        while time.monotonic() < quiet_end:
            got.extend(consumer.poll_batch(500, 0.1))
    finally:
        consumer.close()
    return got
