"""One "process" of the demo: an ASGI app under uvicorn, in a thread, on a loopback port chosen free at start.

Threads rather than processes so the embedded run works on fakeredis (which lives in this process). The
listening socket is bound before uvicorn starts and handed to it, so no other program can take the port
between choosing and serving it.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


class Served:
    """``Served(app, name)`` serves until :meth:`stop`; ``url`` is where it listens."""

    def __init__(self, app: Any, name: str, *, start_timeout_s: float = 10.0) -> None:
        self.name = name
        # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the listening
        # socket's proto says TCP; with proto 0 every response waits ~40 ms on Nagle + delayed ACK
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False,
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name=f"uvicorn-{name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + start_timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start on port {self.port}")
            time.sleep(0.01)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (at most 2 s), run the app's shutdown, join the thread.
        Stopping is all a crash looks like from the network: the port refuses connections from now on."""
        self.server.should_exit = True
        self._thread.join(10)
        self._sock.close()
