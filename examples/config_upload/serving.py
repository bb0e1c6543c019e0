"""Assembling the service from a :class:`~examples._wiring.Wiring` and running it under uvicorn.

Staging ids come from a :class:`distkit.idgen.Snowflake` whose worker id is leased in Redis, so several
instances of this service never hand out the same id and no database round trip is needed before the body
starts streaming. The server binds its own socket on ``127.0.0.1:0`` first, so the port is free by
construction (no pick-a-port-then-hope race).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from distkit.idgen import RedisWorkerLease, Snowflake
from examples._wiring import Wiring
from examples.config_upload.asgi import ConfigUploadApp
from examples.config_upload.store import ConfigStore
from examples.config_upload.upload import Limits


def leased_ids(redis_client: Any, namespace: str, ttl_s: float = 1.0) -> Snowflake:
    """Staging ids from a worker id leased in Redis (a new lease namespace waits one ttl before its first id)."""
    return Snowflake.from_lease(RedisWorkerLease(redis_client, namespace=f"{namespace}:config-upload", ttl_s=ttl_s))


@contextmanager
def config_service(
    wiring: Wiring, limits: Limits | None = None, ids: Snowflake | None = None
) -> Iterator[ConfigUploadApp]:
    """The ASGI app on ``wiring``'s database. ``ids``: a generator shared with other instances (kept open);
    by default one is leased for this service and released on exit."""
    store = ConfigStore(wiring.engine, wiring.table)
    own = ids is None
    gen = leased_ids(wiring.redis, wiring.namespace) if ids is None else ids
    try:
        yield ConfigUploadApp(store, gen.next_id, limits)
    finally:
        if own:
            gen.close()


@contextmanager
def serve(app: ConfigUploadApp, start_timeout_s: float = 10.0) -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread; yields its base URL, stops it on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, http="h11", loop="asyncio", lifespan="off", log_config=None, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="config-upload", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=start_timeout_s)
        sock.close()
