"""Module fixtures: behaviour tests run against plain Redis and the 3-master Redis Cluster alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from distkit.locks import AsyncLocks, Locks


@pytest.fixture(params=["redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(backend: str, request: pytest.FixtureRequest) -> Any:
    """A sync client: ``redis_client`` or ``redis_cluster`` (both clean up the test's namespace)."""
    return request.getfixturevalue("redis_client" if backend == "redis" else "redis_cluster")


@pytest.fixture
def aclient(backend: str, request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("async_redis_client" if backend == "redis" else "async_redis_cluster")


@pytest.fixture
def locks(client: Any, namespace: str) -> Iterator[Locks]:
    with Locks(client, namespace=namespace, lease_ms=3_000, waiter_ttl_ms=1_500, linger_s=0.5) as lk:
        yield lk


@pytest.fixture
async def alocks(aclient: Any, namespace: str) -> AsyncIterator[AsyncLocks]:
    async with AsyncLocks(aclient, namespace=namespace, lease_ms=3_000, waiter_ttl_ms=1_500, linger_s=0.5) as lk:
        yield lk


def keys_of(client: Any, namespace: str) -> list[bytes]:
    return list(client.scan_iter(match=f"*{namespace}*", count=1000))


async def akeys_of(client: Any, namespace: str) -> list[bytes]:
    return [k async for k in client.scan_iter(match=f"*{namespace}*", count=1000)]
