"""A backend process: registers itself in the registry and answers with who it is.

``python -m tests.gateway._backend REDIS_URL NAMESPACE SERVICE NAME [FLAKY_FLAG_FILE]``: prints its port, then
serves until killed. With a flag file it answers 503 until that file exists.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis

from distkit.gateway import ServiceInstance, ServiceRegistry


def main(url: str, namespace: str, service: str, name: str, flag: str | None) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body_in = self.rfile.read(n) if n else b""
            status = 503 if flag and not os.path.exists(flag) else 200
            body = json.dumps({"backend": name, "path": self.path, "user": self.headers.get("x-user-id"),
                               "traceparent": self.headers.get("traceparent"), "body": body_in.decode()}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *a: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    registry = ServiceRegistry(redis.Redis.from_url(url), namespace=namespace, ttl_s=2)
    registry.register(ServiceInstance(service, "127.0.0.1", port, metadata={"name": name}))
    print(port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], a[2], a[3], a[4] if len(a) > 4 else None)
