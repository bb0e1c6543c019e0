"""A :class:`~examples._wiring.Wiring` on the real servers ``make test`` starts, for the reference apps' tests.

The apps run unchanged: the same code as ``make demo``, with real Redis, Kafka and PostgreSQL under a fresh
namespace (Redis keys, topic names) and a fresh PostgreSQL schema. Tests assert the apps' invariants
(``story.checks``), not their printed text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from distkit.config import Settings
from examples._wiring import Wiring


@pytest.fixture
def wiring(
    redis_client: Any, pg_engine: Any, kafka_bootstrap: str, namespace: str, settings: Settings
) -> Iterator[Wiring]:
    from distkit.messaging.kafka import KafkaBroker

    broker = KafkaBroker(kafka_bootstrap)
    w = Wiring(
        redis=redis_client,
        broker=broker,
        engine=pg_engine,
        namespace=namespace.replace("-", ""),
        embedded=False,
        settings=settings,
    )
    yield w
    broker.close()
    for key in redis_client.scan_iter(match=f"*{w.namespace}*", count=1000):  # the apps' keys (no hyphen)
        redis_client.delete(key)
