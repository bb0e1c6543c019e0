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


class BlackHoleProxy:
    """A TCP proxy in front of a Redis server that can stop answering: ``black_hole()`` makes it swallow every
    byte on open connections and accept new ones without ever replying (a hung server, a dropped route)."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading

        self.target_port = target_port
        self.holed = threading.Event()
        self._closed = False
        self._socks: list[Any] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True, name="test-blackhole-accept").start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def black_hole(self) -> None:
        self.holed.set()

    def _accept(self) -> None:
        import socket
        import threading

        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._socks.append(conn)
            if self.holed.is_set():
                threading.Thread(target=self._pipe, args=(conn, None), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                conn.close()
                continue
            self._socks.append(upstream)
            threading.Thread(target=self._pipe, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, conn), daemon=True).start()

    def _pipe(self, src: Any, dst: Any) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if dst is not None and not self.holed.is_set():
                try:
                    dst.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        import contextlib

        self._closed = True
        with contextlib.suppress(OSError):
            self._server.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def blackhole(private_redis: Any) -> Iterator[BlackHoleProxy]:
    proxy = BlackHoleProxy(private_redis.port)
    yield proxy
    proxy.close()


def runner_bounds_calls(url: str) -> bool:
    """Whether ``distkit._redis.Runner`` already honours ``deadline=`` against an unreachable server with a
    default client (the redis-plumbing work); probed in a daemon thread so a stub that hangs cannot hang us."""
    import threading
    import time

    import redis

    from distkit._redis import Runner
    from distkit.locks.specs import LOCK_RENEW

    client = redis.Redis.from_url(url)
    done = threading.Event()

    def probe() -> None:
        try:
            Runner(client)(LOCK_RENEW, [b"{probe}"], ["x", "1", 1000], deadline=time.monotonic() + 0.2)
        except Exception:
            pass
        done.set()

    threading.Thread(target=probe, daemon=True).start()
    return done.wait(0.6)
