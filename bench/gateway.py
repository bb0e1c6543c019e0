"""Gateway benchmarks: JWT verifications/s vs raw PyJWT, and requests/s + p50/p99 through the Gateway vs a
direct call and vs a minimal hand-written httpx forwarding app, all in the same run."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench._table import Row, best_rates, percentiles, print_table


def _jwt_rows() -> list[Row]:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from distkit.gateway import JwtVerifier

    rows: list[Row] = []
    secret = "bench-secret-" * 4
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"sub": "u", "iss": "iss", "aud": "aud", "exp": now + 3600}
    cases = [
        ("HS256", secret, secret, jwt.encode(claims, secret, algorithm="HS256", headers={"kid": "k"})),
        ("RS256", key, key.public_key(), jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k"})),
    ]
    for alg, _sign, verify_key, token in cases:
        uncached = JwtVerifier({"k": verify_key}, algorithms=[alg], issuer="iss", audience="aud", cache_size=0)
        cached = JwtVerifier({"k": verify_key}, algorithms=[alg], issuer="iss", audience="aud")
        rates = best_rates([
            ("raw PyJWT jwt.decode", lambda t=token, k=verify_key, a=alg: jwt.decode(
                t, k, algorithms=[a], audience="aud", issuer="iss", options={"require": ["exp"]})),
            ("distkit JwtVerifier (no cache)", lambda v=uncached, t=token: v.verify(t)),
            ("distkit JwtVerifier (cached)", lambda v=cached, t=token: v.verify(t)),
        ], rounds=3, seconds=1.5)
        rows += [Row(f"JWT verify {alg}", name, r, "verif/s") for name, r in rates.items()]
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: with Nagle each answer waits ~40 ms

    def do_GET(self) -> None:
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: Any) -> None:
        pass


def _serve(app: Any) -> tuple[Any, str]:
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}"


def _load(url: str, headers: dict[str, str], seconds: float = 3.0, threads: int = 8) -> tuple[float, float, float]:
    import httpx

    samples: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        mine = []
        with httpx.Client(timeout=10) as client:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                client.get(url, headers=headers).raise_for_status()
                mine.append(time.perf_counter() - t0)
        with lock:
            samples.extend(mine)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(threads):
            pool.submit(worker)
    elapsed = time.perf_counter() - t0
    p50, p99 = percentiles(samples)
    return len(samples) / elapsed, p50, p99


def _proxy_rows() -> list[Row]:
    url = os.environ.get("DISTKIT_REDIS_URL")
    if not url:
        print("bench.gateway: DISTKIT_REDIS_URL is not set; skipping the proxy benchmark")
        return []
    import httpx
    import jwt
    import redis

    from distkit.gateway import Gateway, JwtVerifier, ServiceInstance, ServiceRegistry

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Backend) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(url)
    registry = ServiceRegistry(client, namespace=ns, ttl_s=10)
    regs = [registry.register(ServiceInstance("order", "127.0.0.1", s.server_address[1])) for s in servers]
    secret = "bench-secret-" * 4
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 3600}, secret, algorithm="HS256")
    gw = Gateway(registry, JwtVerifier({"k": secret}, algorithms=["HS256"]), routes={"/orders": "order"})
    while len(gw.instances("order")) < 2:
        time.sleep(0.05)

    async def minimal(scope: Any, receive: Any, send: Any) -> None:  # a hand-written httpx forwarder
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        minimal.n = getattr(minimal, "n", 0) + 1  # type: ignore[attr-defined]
        port = servers[minimal.n % 2].server_address[1]  # type: ignore[attr-defined]
        if not hasattr(minimal, "client"):
            minimal.client = httpx.AsyncClient()  # type: ignore[attr-defined]
        resp = await minimal.client.get(f"http://127.0.0.1:{port}{scope['path']}")  # type: ignore[attr-defined]
        await send({"type": "http.response.start", "status": resp.status_code,
                    "headers": [(b"content-length", str(len(resp.content)).encode())]})
        await send({"type": "http.response.body", "body": resp.content})

    gw_server, gw_url = _serve(gw)
    min_server, min_url = _serve(minimal)
    auth = {"Authorization": f"Bearer {token}"}
    rows = []
    try:
        for name, target, headers in (
            ("direct to a backend", f"http://127.0.0.1:{servers[0].server_address[1]}/orders/1", {}),
            ("hand-written httpx forwarder", f"{min_url}/orders/1", {}),
            ("distkit Gateway (JWT + registry + RR)", f"{gw_url}/orders/1", auth),
        ):
            rps, p50, p99 = _load(target, headers)
            rows += [Row("proxy requests/s (8 clients)", name, rps, "req/s"),
                     Row("proxy p50", name, p50, "ms"), Row("proxy p99", name, p99, "ms")]
    finally:
        gw_server.should_exit = True
        min_server.should_exit = True
        gw.close()
        for r in regs:
            r.deregister()
        for s in servers:
            s.shutdown()
    return rows


def main() -> None:
    rows = _jwt_rows()
    print_table("distkit.gateway: JWT verification (ratio vs raw PyJWT)", rows)
    proxy = _proxy_rows()
    if proxy:
        print_table("distkit.gateway: forwarding (ratio vs the hand-written forwarder)", proxy,
                    baseline="hand-written")
