"""Network fault helpers for tests (import them, or use the fixtures via ``from tests.faults import *`` in a
conftest): a black hole that accepts and never answers, a listener whose connects hang, and a TCP proxy in front
of a (private) server that can drop a reply or turn into a black hole.

Everything binds 127.0.0.1 on a free port and runs in daemon threads; ``close()`` ends it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest


class BlackHole:
    """Accepts TCP connections and never reads or answers (a hung server, a firewall that swallows replies)."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        for s in self.accepted:
            with contextlib.suppress(OSError):
                s.close()


class HangingConnect:
    """A listener that never accepts and whose backlog is full: a new ``connect()`` hangs (the SYN is dropped),
    like a host that does not answer."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port = int(self._listener.getsockname()[1])
        self._fillers: list[socket.socket] = []
        for _ in range(8):  # fill the accept queue (backlog 0 still admits one or two)
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError, OSError):
                s.connect(("127.0.0.1", self.port))
            self._fillers.append(s)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        for s in [*self._fillers, self._listener]:
            with contextlib.suppress(OSError):
                s.close()


class Proxy:
    """A TCP proxy to ``target_port``. ``drop_replies = n``: the next n server-to-client chunks (that start with
    ``drop_prefix``, if set: ``b":"`` for integer replies, so connection handshakes are never hit) are swallowed
    and that client connection is cut (the command ran, its reply is lost). ``black_hole = True``: new and
    existing connections stop forwarding in both directions (the server looks hung)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.drop_replies = 0
        self.drop_prefix = b""
        self.dropped = 0
        self.black_hole = False
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        self._socks: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._socks.append(client)
            if self.black_hole:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, is_reply: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.black_hole:
                    continue  # swallow: nothing reaches the other side any more
                if is_reply:
                    with self._lock:
                        drop = self.drop_replies > 0 and data.startswith(self.drop_prefix)
                        if drop:
                            self.drop_replies -= 1
                            self.dropped += 1
                    if drop:
                        break  # the reply is lost and the connection cut
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.fixture
def hanging_connect() -> Iterator[HangingConnect]:
    hang = HangingConnect()
    yield hang
    hang.close()


@pytest.fixture
def redis_proxy(private_redis: Any) -> Iterator[Proxy]:
    """A :class:`Proxy` in front of this test's private redis-server."""
    proxy = Proxy(private_redis.port)
    yield proxy
    proxy.close()


def server_clients(url: str) -> int:
    """Client connections a server sees, not counting the one asking (``INFO clients``)."""
    import redis

    observer = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return int(observer.info("clients")["connected_clients"]) - 1
    finally:
        observer.close()
