from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from distkit.resilience import MemoryBreakerStore
from tests.fakeclock import FakeClock


@pytest.fixture(params=["memory", "redis"])
def make_store(request: Any, fake_clock: FakeClock, namespace: str) -> Iterator[Any]:
    """Factory of a shared store driven by the fake clock, without a flusher thread (tests call ``flush()``)."""
    made: list[Any] = []

    def make() -> Any:
        if request.param == "memory":
            if not made:
                made.append(MemoryBreakerStore(clock=fake_clock, flush_s=None))
            return made[0]
        from distkit.resilience import RedisBreakerStore

        client = request.getfixturevalue("redis_client")
        store = RedisBreakerStore(client, prefix=namespace, flush_s=None, clock=fake_clock)
        made.append(store)
        return store

    yield make
    for s in made:
        s.close()
