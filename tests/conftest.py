"""Fixtures for the real services started by ``make test`` (``infra/services.py``).

Each fixture reads a ``DISTKIT_*`` URL. Without it the test is skipped, unless
``DISTKIT_REQUIRE_SERVICES=1`` (set by ``make test``), where a missing or unreachable service is an
error: CI must never go green by skipping the real-server tests.

Isolation: every test gets a fresh ``namespace`` (use it for Redis keys), a fresh PostgreSQL schema
(``pg_engine``'s search_path) and fresh Kafka topics (``new_topic``). Nothing is flushed globally, so
test runs and developers can share one set of servers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from distkit.config import Settings
from tests.fakeclock import FakeClock

REQUIRE = os.environ.get("DISTKIT_REQUIRE_SERVICES") == "1"


def _missing(what: str, env: str) -> None:
    msg = f"{what} not configured: {env} is unset (run `make test`, or `make services-up` and export the env)"
    if REQUIRE:
        pytest.fail(msg + " [DISTKIT_REQUIRE_SERVICES=1]", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture
def namespace() -> str:
    """A unique namespace for this test's keys, e.g. ``t-3f2a9c1b``."""
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


# --------------------------------------------------------------------------- redis


@pytest.fixture(scope="session")
def redis_url(settings: Settings) -> str:
    if not settings.redis_url:
        _missing("Redis", "DISTKIT_REDIS_URL")
    return settings.redis_url  # type: ignore[return-value]


@pytest.fixture
def redis_client(redis_url: str, namespace: str) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis at {redis_url} is unreachable: {exc}", pytrace=False)
    yield client
    for k in client.scan_iter(match=f"*{namespace}*", count=1000):
        client.delete(k)
    client.close()


@pytest.fixture
async def async_redis_client(redis_url: str, namespace: str) -> AsyncIterator[Any]:
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(redis_url)
    await client.ping()
    yield client
    async for k in client.scan_iter(match=f"*{namespace}*", count=1000):
        await client.delete(k)
    await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster_nodes(settings: Settings) -> tuple[tuple[str, int], ...]:
    if not settings.redis_cluster_nodes:
        _missing("Redis Cluster", "DISTKIT_REDIS_CLUSTER_NODES")
    return settings.redis_cluster_nodes


@pytest.fixture
def redis_cluster(settings: Settings, redis_cluster_nodes: Any, namespace: str) -> Iterator[Any]:
    client = settings.redis_cluster()
    yield client
    for k in client.scan_iter(match=f"*{namespace}*", count=1000):
        client.delete(k)
    client.close()


@pytest.fixture
async def async_redis_cluster(settings: Settings, redis_cluster_nodes: Any, namespace: str) -> AsyncIterator[Any]:
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in redis_cluster_nodes])
    await client.initialize()
    yield client
    async for k in client.scan_iter(match=f"*{namespace}*", count=1000):
        await client.delete(k)
    await client.aclose()


# --------------------------------------------------------------------------- postgres


@pytest.fixture(scope="session")
def database_url(settings: Settings) -> str:
    if not settings.database_url:
        _missing("PostgreSQL", "DISTKIT_DATABASE_URL")
    return settings.database_url  # type: ignore[return-value]


@pytest.fixture
def pg_schema() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pg_engine(database_url: str, pg_schema: str) -> Iterator[Any]:
    """An engine whose connections use a fresh schema (search_path), dropped after the test.

    Child processes can rebuild it from ``engine.url`` plus ``pg_connect_args(pg_schema)``.
    """
    from sqlalchemy import create_engine, text

    admin = create_engine(database_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{pg_schema}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {database_url} is unusable: {exc}", pytrace=False)
    engine = create_engine(database_url, connect_args=pg_connect_args(pg_schema), pool_size=10, max_overflow=20)
    yield engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{pg_schema}" CASCADE'))
    admin.dispose()


def pg_connect_args(schema: str) -> dict[str, Any]:
    return {"options": f"-csearch_path={schema}"}


# --------------------------------------------------------------------------- kafka


@pytest.fixture(scope="session")
def kafka_bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        _missing("Kafka", "DISTKIT_KAFKA_BOOTSTRAP")
    return settings.kafka_bootstrap  # type: ignore[return-value]


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Factory: ``new_topic(partitions=1, prefix="t")`` creates a uniquely named topic and returns its name."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(partitions: int = 1, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        futures = admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10)
        try:
            futures[name].result(timeout=15)
        except Exception as exc:
            pytest.fail(f"Kafka at {kafka_bootstrap} could not create topic {name}: {exc}", pytrace=False)
        created.append(name)
        return name

    yield make
    if created:
        for fut in admin.delete_topics(created, operation_timeout=10).values():
            try:
                fut.result(timeout=15)
            except Exception:  # best effort: a topic the test deleted itself
                continue


# --------------------------------------------------------------------------- private servers for fault tests


class RedisServerProcess:
    """A throwaway ``redis-server`` owned by one test, so fault tests (stop, restart) never touch the
    shared servers. ``stop()`` / ``start()`` may be called repeatedly; the port stays the same."""

    def __init__(self, workdir: Any) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.workdir = workdir
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import shutil
        import socket
        import subprocess
        import time

        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (make test installs it)", pytrace=False)
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        pytest.fail(f"private redis-server on port {self.port} did not start", pytrace=False)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_redis(tmp_path: Any, redis_url: str) -> Iterator[RedisServerProcess]:
    """A private, started ``redis-server`` (see :class:`RedisServerProcess`); stopped after the test.

    Depends on ``redis_url`` only so it follows the same skip/require rules as the shared Redis."""
    server = RedisServerProcess(tmp_path)
    server.start()
    yield server
    server.stop()
