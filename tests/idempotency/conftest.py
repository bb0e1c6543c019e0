"""Store fixtures shared by the idempotency tests: one behaviour suite, every store."""

from __future__ import annotations

import pytest

from distkit.idempotency import RedisIdempotencyStore, SqlIdempotencyStore


@pytest.fixture(params=["redis", "redis-client-path", "sql"])
def store_kind(request):
    """ "redis" runs the scripts over the direct lane, "redis-client-path" through redis-py (``direct=False``)."""
    return request.param


@pytest.fixture
def store(store_kind, request, namespace):
    if store_kind.startswith("redis"):
        return RedisIdempotencyStore(
            request.getfixturevalue("redis_client"), prefix=f"idem-{namespace}", direct=store_kind == "redis"
        )
    return SqlIdempotencyStore(request.getfixturevalue("pg_engine"))
