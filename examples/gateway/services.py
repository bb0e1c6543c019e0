"""What stands behind the gateway: a flaky pricing dependency and the order service (run as two instances).
Plain ASGI apps, so uvicorn is all they need.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from opentelemetry.trace import SpanKind, TracerProvider

from distkit.messaging import Broker
from distkit.resilience import BreakerOpenError, CircuitBreaker, degrade
from distkit.tracing import extract_context, traced_producer

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
CATALOGUE = {"tea": 450, "mug": 1200, "kettle": 3900}  # list prices in cents: the fallback when pricing is down
SKUS = sorted(CATALOGUE)


async def reply(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def read_json(receive: Receive) -> Any:
    chunks = []
    while (msg := await receive())["type"] == "http.request":
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    try:
        return json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        return None


async def lifespan(receive: Receive, send: Send, on_shutdown: Callable[[], Awaitable[object]] | None = None) -> None:
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    if on_shutdown is not None:
        await on_shutdown()
    await send({"type": "lifespan.shutdown.complete"})


class Pricing:
    """Today's prices (10 % off the catalogue); answers 503 while ``down`` is set, and counts every call."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        self.calls += 1
        sku = scope["path"].rsplit("/", 1)[-1]
        if self.down or sku not in CATALOGUE:
            return await reply(send, 503 if self.down else 404, {"error": "pricing unavailable", "sku": sku})
        await reply(send, 200, {"sku": sku, "price": CATALOGUE[sku] * 9 // 10})


def catalogue_price(sku: str) -> dict[str, Any]:
    return {"price": CATALOGUE[sku], "source": "catalogue"}


class OrderService:
    """One instance. ``GET /orders/<n>`` quotes order n, pricing it through a circuit breaker with the catalogue
    price as fallback; ``POST /orders`` publishes ``order-created``, which carries the request's trace."""

    def __init__(self, name: str, pricing_url: str, broker: Broker, topic: str, tracing: TracerProvider) -> None:
        self.name = name
        self.served = 0
        self.breaker = CircuitBreaker(f"pricing@{name}", failure_rate=0.5, minimum_calls=4, window_s=10,
                                      open_s=1.0, half_open_calls=1)
        # the breaker counts pricing's errors; degrade answers from the catalogue on those and while it is open
        self.quote = degrade(fallback=catalogue_price, on=(BreakerOpenError, httpx.HTTPError))(
            self.breaker(self._live_price))
        self._pricing_url = pricing_url
        self._http = httpx.AsyncClient(timeout=1.0)
        self._raw = broker.producer()
        self._producer = traced_producer(self._raw, tracer_provider=tracing)
        self._tracer = tracing.get_tracer("order-service")
        self._topic = topic

    async def _live_price(self, sku: str) -> dict[str, Any]:
        resp = await self._http.get(f"{self._pricing_url}/prices/{sku}")
        resp.raise_for_status()
        return {"price": resp.json()["price"], "source": "pricing"}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send, self._http.aclose)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        user = dict(headers).get("x-user-id", "")  # set by the gateway from the verified token
        method, path = scope["method"], scope["path"]
        with self._tracer.start_as_current_span(f"{method} /orders", context=extract_context(headers),
                                                kind=SpanKind.SERVER) as span:
            self.served += 1
            base = {"instance": self.name, "user": user,
                    "trace_id": format(span.get_span_context().trace_id, "032x")}
            if method == "POST" and path == "/orders":
                body = await read_json(receive)
                sku = body.get("sku") if isinstance(body, dict) else None
                if not isinstance(sku, str) or sku not in CATALOGUE:
                    return await reply(send, 400, {**base, "error": f"unknown sku {sku!r}"})
                event = {"order_id": secrets.token_hex(6), "sku": sku, "user": user}
                self._producer.send(self._topic, event, key=event["order_id"])
                await asyncio.to_thread(self._raw.flush, 10.0)  # acknowledged before we answer 201
                return await reply(send, 201, {**base, **event})
            n = path.removeprefix("/orders/")
            if method != "GET" or not n.isdigit():
                return await reply(send, 404, {**base, "error": "no such order"})
            sku = SKUS[int(n) % len(SKUS)]
            await reply(send, 200, {**base, "order": int(n), "sku": sku, **await self.quote(sku)})

    def close(self) -> None:
        self._raw.close()
