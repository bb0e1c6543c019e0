"""Fixtures for the real services started by ``make test`` (``infra/services.py``).

They are thin aliases of distkit's own pytest plugin (:mod:`distkit.testing.plugin`, the fixtures users get),
pinned to the ``DISTKIT_*`` URLs only (``distkit_service_sources`` below): the suite never starts containers or
servers by itself. Without a URL the test is skipped, unless ``DISTKIT_REQUIRE_SERVICES=1`` (set by
``make test``), where a missing or unreachable service is an error: CI must never go green by skipping the
real-server tests.

Isolation: every test gets a fresh ``namespace`` (use it for Redis keys), a fresh PostgreSQL schema
(``pg_engine``'s search_path) and fresh Kafka topics (``new_topic``). Nothing is flushed globally, so
test runs and developers can share one set of servers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from distkit.config import Settings
from distkit.testing import FakeClock

pytest_plugins = ["distkit.testing.plugin"]

__all__ = ["RedisServerProcess", "pg_connect_args"]


@pytest.fixture(scope="session")
def distkit_service_sources() -> tuple[str, ...]:
    """The suite runs against the servers `make test` started (DISTKIT_* env), never containers or its own."""
    return ("env",)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture
def namespace(distkit_namespace: str) -> str:
    """A unique namespace for this test's keys, e.g. ``t-3f2a9c1b``."""
    return distkit_namespace


@pytest.fixture
def fake_clock(distkit_fake_clock: FakeClock) -> FakeClock:
    return distkit_fake_clock


# --------------------------------------------------------------------------- redis


@pytest.fixture(scope="session")
def redis_url(distkit_redis_url: str) -> str:
    return distkit_redis_url


@pytest.fixture
def redis_client(distkit_redis: Any) -> Any:
    return distkit_redis


@pytest.fixture
def async_redis_client(distkit_async_redis: Any) -> Any:
    return distkit_async_redis


@pytest.fixture(scope="session")
def redis_cluster_nodes(distkit_redis_cluster_nodes: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    return distkit_redis_cluster_nodes


@pytest.fixture
def redis_cluster(distkit_redis_cluster: Any) -> Any:
    return distkit_redis_cluster


@pytest.fixture
def async_redis_cluster(distkit_async_redis_cluster: Any) -> Any:
    return distkit_async_redis_cluster


# --------------------------------------------------------------------------- postgres


@pytest.fixture(scope="session")
def database_url(distkit_database_url: str) -> str:
    return distkit_database_url


@pytest.fixture
def pg_schema(distkit_pg_schema: str) -> str:
    return distkit_pg_schema


@pytest.fixture
def pg_engine(distkit_pg_engine: Any) -> Any:
    """An engine whose connections use a fresh schema (search_path), dropped after the test.

    Child processes can rebuild it from ``engine.url`` plus ``pg_connect_args(pg_schema)``.
    """
    return distkit_pg_engine


def pg_connect_args(schema: str) -> dict[str, Any]:
    """The same as ``distkit.testing.plugin.pg_connect_args`` (not imported here: the plugin module must be
    imported by pytest itself, so it gets assertion rewriting)."""
    return {"options": f"-csearch_path={schema}"}


# --------------------------------------------------------------------------- kafka


@pytest.fixture(scope="session")
def kafka_bootstrap(distkit_kafka_bootstrap: str) -> str:
    return distkit_kafka_bootstrap


@pytest.fixture
def new_topic(distkit_new_topic: Callable[..., str]) -> Callable[..., str]:
    """Factory: ``new_topic(partitions=1, prefix="t")`` creates a uniquely named topic and returns its name."""
    return distkit_new_topic


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
