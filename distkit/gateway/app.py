"""The gateway: an ASGI app that checks the JWT, picks a live instance of the route's service and forwards.

Response codes (docs/gateway.md): 401 bad or missing token (with ``WWW-Authenticate``), 404 no route, 429 rate
limited (``Retry-After`` + RateLimit headers), 503 no live instance, 502 every tried instance refused (or reset) the
connection, 504 the backend did not answer in time; anything else is the backend's own answer.

The request path never waits on Redis: each route's instances come from a registry watch kept in memory.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from distkit import _metrics
from distkit.errors import InvalidArgumentError, InvalidTokenError, NoInstanceError
from distkit.gateway.balancers import Balancer, RoundRobin
from distkit.gateway.health import OutlierDetector
from distkit.gateway.jwt import Claims, JwtVerifier
from distkit.gateway.registry import ServiceInstance, ServiceRegistry, Watch
from distkit.tracing.propagation import extract_context, inject_headers
from distkit.tracing.spans import tracer_for

if TYPE_CHECKING:
    from distkit.ratelimit import AsyncRedisBackend, MemoryBackend, RedisBackend
    from distkit.ratelimit.limiter import Limiter

_REQUESTS = _metrics.counter("distkit.gateway.requests", "1", "requests answered, by route service and status")
_DURATION = _metrics.histogram("distkit.gateway.request.duration", "s", "time to answer a request, by service")
_UPSTREAM_ERRORS = _metrics.counter("distkit.gateway.upstream.errors", "1",
                                    "backend instances that refused the connection or timed out")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                        "transfer-encoding", "upgrade", "host", "content-length"})


class Gateway:
    """``Gateway(registry, verifier, routes={"/orders": "order"}, balancer=RoundRobin(), rate_limiter=None)``.

    ``rate_limiter``: a :mod:`distkit.ratelimit` limiter, keyed ``user:<sub>``. ``retries``: extra attempts on
    another instance when the connection fails, for idempotent methods only. ``user_header``: where the
    verified subject goes (any incoming header of that name is dropped first)."""

    def __init__(
        self,
        registry: ServiceRegistry,
        verifier: JwtVerifier,
        *,
        routes: Mapping[str, str],
        balancer: Balancer | None = None,
        rate_limiter: Limiter[AsyncRedisBackend] | Limiter[MemoryBackend] | Limiter[RedisBackend] | None = None,
        outlier: OutlierDetector | None = None,
        timeout_s: float = 10.0,
        retries: int = 1,
        user_header: str = "x-user-id",
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not routes:
            raise InvalidArgumentError("Gateway needs at least one route, e.g. {'/orders': 'order'}")
        for prefix in routes:
            if not prefix.startswith("/"):
                raise InvalidArgumentError(f"route prefixes start with '/', got {prefix!r}")
        self.registry = registry
        self.verifier = verifier
        self.routes = dict(sorted(routes.items(), key=lambda kv: -len(kv[0])))  # longest prefix first
        self.balancer: Balancer = balancer or RoundRobin()
        self.rate_limiter = rate_limiter
        self.outlier = outlier or OutlierDetector()
        self.timeout_s = timeout_s
        self.retries = retries
        self.user_header = user_header.lower()
        self._client = client
        self._own_client = client is None
        self._watches: dict[str, Watch] = {svc: registry.watch(svc, lambda _i: None) for svc in set(routes.values())}

    def instances(self, service: str) -> list[ServiceInstance]:
        return self._watches[service].instances

    def close(self) -> None:
        for w in self._watches.values():
            w.stop()

    async def aclose(self) -> None:
        self.close()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False)
        return self._client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        status, headers, body = await self._handle(scope, receive)
        if _metrics.enabled():
            service = self._route(scope["path"]) or "none"  # the route's service, not the path: bounded
            _REQUESTS.add(1, {"service": service, "status": status})
            _DURATION.record(time.perf_counter() - start, {"service": service})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _route(self, path: str) -> str | None:
        for prefix, service in self.routes.items():
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return service
        return None

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, list[tuple[str, str]], bytes]:
        incoming = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]
        service = self._route(scope["path"])
        if service is None:
            return _json(404, {"error": "no route", "path": scope["path"]})
        auth = next((v for k, v in incoming if k == "authorization"), "")
        if not auth.lower().startswith("bearer "):
            return _json(401, {"error": "missing bearer token"}, [("www-authenticate", 'Bearer realm="distkit"')])
        try:
            claims = self.verifier.verify(auth[7:].strip())
        except InvalidTokenError as exc:
            challenge = f'Bearer realm="distkit", error="invalid_token", error_description="{type(exc).__name__}"'
            return _json(401, {"error": "invalid token", "reason": type(exc).__name__},
                         [("www-authenticate", challenge)])
        extra: list[tuple[str, str]] = []
        if self.rate_limiter is not None:
            decision = self.rate_limiter.acquire(f"user:{claims.subject}")
            if inspect.isawaitable(decision):
                decision = await decision
            extra = [(k.lower(), v) for k, v in decision.headers().items()]
            if not decision.allowed:
                return _json(429, {"error": "rate limited"}, extra)
        body = await _read_body(receive)
        status, headers, content = await self._forward(scope, service, incoming, body, claims)
        return status, headers + extra, content

    async def _forward(self, scope: Scope, service: str, incoming: list[tuple[str, str]], body: bytes,
                       claims: Claims) -> tuple[int, list[tuple[str, str]], bytes]:
        method = scope["method"]
        live = self.instances(service)
        candidates = self.outlier.healthy(live)
        if not candidates:
            return _json(503, {"error": "no live instance", "service": service}, [("retry-after", "1")])
        headers = {k: v for k, v in incoming if k not in HOP_BY_HOP and k != self.user_header}
        headers[self.user_header] = str(claims.subject or "")
        parent = extract_context(incoming)
        tracer = tracer_for(None)
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        target = path.decode("latin-1") + (("?" + query.decode("latin-1")) if query else "")
        attempts = 1 + (self.retries if method in IDEMPOTENT else 0)
        tried: set[str] = set()
        for _ in range(attempts):
            pool = [i for i in candidates if i.instance_id not in tried] or candidates
            try:
                inst = self.balancer.choose(pool)
            except NoInstanceError:
                break
            tried.add(inst.instance_id)
            try:
                with self.balancer.track(inst):
                    if tracer is not None:
                        with tracer.start_as_current_span(f"gateway {service}", context=parent,
                                                          attributes={"http.request.method": method}):
                            resp = await self._send(method, inst, target, inject_headers(dict(headers)), body)
                    else:
                        resp = await self._send(method, inst, target,
                                                inject_headers(dict(headers), context=parent), body)
            except (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError):
                # refused, or reset before the answer (a backend dying with our keep-alive connection open):
                # idempotent methods try another instance, others end in 502 (never a 500 from the gateway)
                self.outlier.record(inst, False, live)
                _UPSTREAM_ERRORS.add(1, {"service": service, "error": "connect"})
                continue
            except httpx.TimeoutException:
                self.outlier.record(inst, False, live)
                _UPSTREAM_ERRORS.add(1, {"service": service, "error": "timeout"})
                return _json(504, {"error": "backend timeout", "service": service})
            self.outlier.record(inst, resp.status_code < 500, live)
            out = [(k.lower(), v) for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP]
            out.append(("content-length", str(len(resp.content))))
            return resp.status_code, out, resp.content
        return _json(502, {"error": "no instance accepted the connection", "service": service})

    async def _send(self, method: str, inst: ServiceInstance, target: str, headers: Mapping[str, Any],
                    body: bytes) -> httpx.Response:
        return await self._http().request(method, inst.url + target, headers=headers, content=body or None)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            break
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    return b"".join(chunks)


def _json(status: int, payload: Any, headers: list[tuple[str, str]] | None = None
          ) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps(payload).encode()
    return status, [("content-type", "application/json"), ("content-length", str(len(body))), *(headers or [])], body
