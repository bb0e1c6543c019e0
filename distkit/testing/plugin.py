"""distkit's pytest plugin: real Redis / PostgreSQL / Kafka for your tests, plus a fake clock and an in-memory broker.

Installed with distkit and enabled through the ``pytest11`` entry point (or ``pytest_plugins =
["distkit.testing.plugin"]`` in a ``conftest.py``). Every fixture is named ``distkit_*`` so none clashes with
yours. Where each service comes from is decided once per session (see :mod:`distkit.testing.provision`):
the ``DISTKIT_*`` URL if set, else a testcontainers container if Docker answers, else a local server; with none,
the test is skipped, or fails when ``DISTKIT_REQUIRE_SERVICES=1`` (so CI never goes green by skipping).

Loading the plugin imports no client library: redis, SQLAlchemy and confluent-kafka are imported inside the
fixtures that need them, so the plugin is harmless where distkit's extras are not installed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from distkit.testing.clock import FakeClock
from distkit.testing.provision import SOURCES, ServiceProvider, ServiceUnavailable, parse_sources

REQUIRE_ENV = "DISTKIT_REQUIRE_SERVICES"
SOURCES_ENV = "DISTKIT_TEST_SERVICES"
STATE_ENV = "DISTKIT_SERVICES_DIR"

__all__ = ["FakeClock", "pg_connect_args", "unavailable"]


def unavailable(message: str) -> NoReturn:
    """Skip the test, or fail it when ``DISTKIT_REQUIRE_SERVICES=1``."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message} [{REQUIRE_ENV}=1]", pytrace=False)
    pytest.skip(message)


def pg_connect_args(schema: str) -> dict[str, Any]:
    """``connect_args`` that put a connection's ``search_path`` on ``schema`` (what ``distkit_pg_engine`` uses);
    a child process rebuilds the engine from ``engine.url`` plus these."""
    return {"options": f"-csearch_path={schema}"}


# --------------------------------------------------------------------------- where the services come from


@pytest.fixture(scope="session")
def distkit_service_sources() -> tuple[str, ...]:
    """The sources allowed, in order: ``$DISTKIT_TEST_SERVICES`` (``env,docker,local``), else all three.
    Override this fixture in a ``conftest.py`` to pin it (distkit's own suite uses ``("env",)``)."""
    return parse_sources(os.environ.get(SOURCES_ENV) or SOURCES)


@pytest.fixture(scope="session")
def distkit_services_dir(pytestconfig: pytest.Config) -> Path:
    """State of the local servers: ``$DISTKIT_SERVICES_DIR``, else ``<rootdir>/.distkit-services``."""
    return Path(os.environ.get(STATE_ENV) or pytestconfig.rootpath / ".distkit-services")


@pytest.fixture(scope="session")
def distkit_service_provider(
    distkit_service_sources: tuple[str, ...], distkit_services_dir: Path
) -> Iterator[ServiceProvider]:
    """The session's :class:`ServiceProvider`; stops the containers and servers it started at the end."""
    provider = ServiceProvider(allowed=distkit_service_sources, state_dir=distkit_services_dir)
    yield provider
    provider.close()


def _get(provider: ServiceProvider, service: str) -> str:
    try:
        return provider.get(service)
    except ServiceUnavailable as exc:
        message = str(exc)
    unavailable(message)  # outside the except: the report shows one message, not a chained traceback


@pytest.fixture(scope="session")
def distkit_redis_url(distkit_service_provider: ServiceProvider) -> str:
    """A Redis URL (``redis://host:port/0``)."""
    return _get(distkit_service_provider, "redis")


@pytest.fixture(scope="session")
def distkit_redis_cluster_nodes(distkit_service_provider: ServiceProvider) -> tuple[tuple[str, int], ...]:
    """A Redis Cluster's ``((host, port), ...)`` (from the environment or a local cluster; never Docker)."""
    from distkit.config import ENV_REDIS_CLUSTER_NODES, Settings

    raw = _get(distkit_service_provider, "cluster")
    return Settings.from_env({ENV_REDIS_CLUSTER_NODES: raw}).redis_cluster_nodes


@pytest.fixture(scope="session")
def distkit_database_url(distkit_service_provider: ServiceProvider) -> str:
    """A PostgreSQL SQLAlchemy URL (``postgresql+psycopg://...``)."""
    return _get(distkit_service_provider, "postgres")


@pytest.fixture(scope="session")
def distkit_kafka_bootstrap(distkit_service_provider: ServiceProvider) -> str:
    """A Kafka bootstrap address (``host:port``)."""
    return _get(distkit_service_provider, "kafka")


# --------------------------------------------------------------------------- no servers


@pytest.fixture
def distkit_namespace() -> str:
    """A unique prefix for this test's keys, e.g. ``t-3f2a9c1b``; the Redis fixtures delete ``*<it>*`` after."""
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def distkit_fake_clock() -> FakeClock:
    """A :class:`FakeClock` at 2023-11-14 (unix ms 1_700_000_000_000) for any distkit ``clock=`` parameter."""
    return FakeClock()


@pytest.fixture
def distkit_broker() -> Iterator[Any]:
    """A fresh :class:`distkit.messaging.InMemoryBroker` (the Kafka protocol, in this process), closed after."""
    from distkit.messaging import InMemoryBroker

    broker = InMemoryBroker()
    yield broker
    broker.close()


# --------------------------------------------------------------------------- redis


@pytest.fixture
def distkit_redis(distkit_redis_url: str, distkit_namespace: str) -> Iterator[Any]:
    """A ``redis.Redis``; the keys containing ``distkit_namespace`` are deleted after the test."""
    import redis

    client = redis.Redis.from_url(distkit_redis_url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis at {distkit_redis_url} is unreachable: {exc}", pytrace=False)
    yield client
    for k in client.scan_iter(match=f"*{distkit_namespace}*", count=1000):
        client.delete(k)
    client.close()


@pytest.fixture
def distkit_redis_cluster(
    distkit_redis_cluster_nodes: tuple[tuple[str, int], ...], distkit_namespace: str
) -> Iterator[Any]:
    """A ``redis.cluster.RedisCluster``; the keys containing ``distkit_namespace`` are deleted after the test."""
    from distkit.config import Settings

    client = Settings(redis_cluster_nodes=distkit_redis_cluster_nodes).redis_cluster()
    yield client
    for k in client.scan_iter(match=f"*{distkit_namespace}*", count=1000):
        client.delete(k)
    client.close()


try:  # the asyncio fixtures exist where pytest-asyncio does (strict or auto mode alike)
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is a dev dependency of distkit itself
    pytest_asyncio = None  # type: ignore[assignment]

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def distkit_async_redis(distkit_redis_url: str, distkit_namespace: str) -> AsyncIterator[Any]:
        """A ``redis.asyncio.Redis`` (needs pytest-asyncio); keys containing ``distkit_namespace`` are deleted."""
        import redis.asyncio as aredis

        client = aredis.Redis.from_url(distkit_redis_url)
        await client.ping()
        yield client
        async for k in client.scan_iter(match=f"*{distkit_namespace}*", count=1000):
            await client.delete(k)
        await client.aclose()

    @pytest_asyncio.fixture
    async def distkit_async_redis_cluster(
        distkit_redis_cluster_nodes: tuple[tuple[str, int], ...], distkit_namespace: str
    ) -> AsyncIterator[Any]:
        """A ``redis.asyncio.cluster.RedisCluster`` (needs pytest-asyncio); cleaned up like the sync one."""
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in distkit_redis_cluster_nodes])
        await client.initialize()
        yield client
        async for k in client.scan_iter(match=f"*{distkit_namespace}*", count=1000):
            await client.delete(k)
        await client.aclose()


# --------------------------------------------------------------------------- postgres


@pytest.fixture
def distkit_pg_schema() -> str:
    """The name of this test's PostgreSQL schema, e.g. ``t_3f2a9c1b0d``."""
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def distkit_pg_engine(distkit_database_url: str, distkit_pg_schema: str) -> Iterator[Any]:
    """A SQLAlchemy engine whose connections use a fresh schema (``search_path``), dropped after the test."""
    from sqlalchemy import create_engine, text

    admin = create_engine(distkit_database_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{distkit_pg_schema}"'))
    except Exception as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {distkit_database_url} is unusable: {exc}", pytrace=False)
    engine = create_engine(
        distkit_database_url, connect_args=pg_connect_args(distkit_pg_schema), pool_size=10, max_overflow=20
    )
    yield engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{distkit_pg_schema}" CASCADE'))
    admin.dispose()


# --------------------------------------------------------------------------- kafka


@pytest.fixture
def distkit_new_topic(distkit_kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Factory: ``distkit_new_topic(partitions=1, prefix="t")`` creates a uniquely named topic and returns its
    name; every topic it made is deleted after the test."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": distkit_kafka_bootstrap})
    created: list[str] = []

    def make(partitions: int = 1, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        futures = admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10)
        try:
            futures[name].result(timeout=15)
        except Exception as exc:
            pytest.fail(f"Kafka at {distkit_kafka_bootstrap} could not create topic {name}: {exc}", pytrace=False)
        created.append(name)
        return name

    yield make
    if created:
        for fut in admin.delete_topics(created, operation_timeout=10).values():
            try:
                fut.result(timeout=15)
            except Exception:  # best effort: a topic the test deleted itself
                continue
