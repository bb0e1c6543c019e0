"""Store fixtures shared by the idempotency tests: one behaviour suite, every store."""

from __future__ import annotations

import pytest

from distkit.idempotency import RedisIdempotencyStore, SqlIdempotencyStore

#: the stores the multi-process tests race on (child processes rebuild them from a URL)
SERVER_STORES = ["redis", "redis-client-path", "sql"]


@pytest.fixture(params=[*SERVER_STORES, "sqlite"])
def store_kind(request):
    """ "redis" runs the scripts over the direct lane, "redis-client-path" through redis-py (``direct=False``),
    "sql" is PostgreSQL, "sqlite" a SQLite file."""
    return request.param


@pytest.fixture
def store(store_kind, request, namespace, tmp_path):
    if store_kind.startswith("redis"):
        return RedisIdempotencyStore(
            request.getfixturevalue("redis_client"), prefix=f"idem-{namespace}", direct=store_kind == "redis"
        )
    if store_kind == "sqlite":
        from sqlalchemy import create_engine

        engine = create_engine(f"sqlite:///{tmp_path / 'idempotency.db'}")
        request.addfinalizer(engine.dispose)
        return SqlIdempotencyStore(engine)
    return SqlIdempotencyStore(request.getfixturevalue("pg_engine"))
