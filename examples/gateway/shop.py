"""The deployment of one run: a login service's key, pricing, two order instances registered in the
``ServiceRegistry``, the shipping consumer and the ``Gateway`` in front, each server on its own loopback port.

``Shop`` is a context manager: leaving it stops every server and thread it started, in reverse order, even
when starting failed half way (an ``ExitStack`` holds one closer per thing started).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from distkit.gateway import Gateway, OutlierDetector, Registration, RoundRobin, ServiceInstance, ServiceRegistry
from distkit.ratelimit import AsyncRedisBackend, Rate, TokenBucket
from examples._wiring import Wiring
from examples.gateway.login import Login
from examples.gateway.servers import Served
from examples.gateway.services import OrderService, Pricing, Receive, Send
from examples.gateway.shipping import Shipping

INSTANCES = ("order-a", "order-b")
PER_USER = Rate(10, per_s=1.0)  # and a burst of 20: what each user (JWT subject) may send


class CountingRoundRobin(RoundRobin):
    """Round-robin that counts its picks per instance name: shows where the gateway sent each attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.picks: Counter[str] = Counter()

    def choose(self, instances: Sequence[ServiceInstance]) -> ServiceInstance:
        chosen = super().choose(instances)
        self.picks[chosen.metadata.get("name", chosen.instance_id)] += 1
        return chosen


def _closing(app: Gateway, *closers: Callable[[], Awaitable[object]]) -> Any:
    """``app`` whose lifespan shutdown also closes ``closers`` (asyncio clients belong to the server's loop)."""

    async def asgi(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        async def send_(msg: dict[str, Any]) -> None:
            if msg["type"] == "lifespan.shutdown.complete":
                for close in closers:
                    await close()
            await send(msg)

        await app(scope, receive, send_)

    return asgi


class Shop:
    """``with Shop(wiring) as shop:`` everything runs; ``shop.url`` is the gateway, ``shop.kill(name)`` a crash."""

    def __init__(self, wiring: Wiring, *, ttl_s: float = 2.0, per_user: Rate = PER_USER,
                 burst: int = 20) -> None:
        self._stack = ExitStack()
        try:
            self._start(wiring, ttl_s, per_user, burst)
        except BaseException:
            self._stack.close()
            raise

    def _start(self, wiring: Wiring, ttl_s: float, per_user: Rate, burst: int) -> None:
        on_exit = self._stack.callback
        self.login = Login()
        self.spans = InMemorySpanExporter()
        self.tracing = TracerProvider(shutdown_on_exit=False)  # this run's spans, kept in memory to show them
        self.tracing.add_span_processor(SimpleSpanProcessor(self.spans))
        on_exit(self.tracing.shutdown)
        self.topic = wiring.topic("order-created")
        wiring.broker.create_topic(self.topic, partitions=2)
        self.shipping = Shipping(wiring.broker, self.topic, f"{wiring.namespace}-shipping", self.tracing)
        on_exit(self.shipping.stop)
        self.pricing = Pricing()
        self.pricing_server = Served(self.pricing, "pricing")
        on_exit(self.pricing_server.stop)
        self.registry = ServiceRegistry(wiring.redis, namespace=wiring.namespace, ttl_s=ttl_s)
        self.orders: dict[str, OrderService] = {}
        self.servers: dict[str, Served] = {}
        self.registrations: dict[str, Registration] = {}
        for name in INSTANCES:
            self.orders[name] = OrderService(name, self.pricing_server.url, wiring.broker, self.topic, self.tracing)
            on_exit(self.orders[name].close)
            self.servers[name] = Served(self.orders[name], name)
            on_exit(self.servers[name].stop)
            instance = ServiceInstance("order", "127.0.0.1", self.servers[name].port, metadata={"name": name})
            self.registrations[name] = self.registry.register(instance)
            on_exit(self.registrations[name].deregister)
        limiter_redis = wiring.async_redis()
        backend = AsyncRedisBackend(limiter_redis, prefix=f"{wiring.namespace}-rl")
        self.limiter = TokenBucket(per_user, burst=burst, backend=backend, name="per-user")
        self.balancer = CountingRoundRobin()
        self.outlier = OutlierDetector(consecutive_failures=3, base_ejection_s=30)
        self.gateway = Gateway(self.registry, self.login.verifier(), routes={"/orders": "order"},
                               balancer=self.balancer, rate_limiter=self.limiter, outlier=self.outlier, timeout_s=5)
        on_exit(self.gateway.close)
        self.wait_until(lambda: len(self.live()) == len(INSTANCES), 5, "the gateway to see both instances")
        self.gateway_server = Served(_closing(self.gateway, backend.aclose, limiter_redis.aclose), "gateway")
        on_exit(self.gateway_server.stop)
        self.url = self.gateway_server.url

    def live(self) -> list[str]:
        """The order instances the gateway currently routes to (from its registry watch)."""
        return [str(i.metadata.get("name")) for i in self.gateway.instances("order")]

    def kill(self, name: str) -> None:
        """A crash: heartbeats stop and the port closes, but nobody deregisters the instance."""
        self.registrations[name].abandon()
        self.servers[name].stop()

    @staticmethod
    def wait_until(ok: Callable[[], bool], timeout_s: float, what: str, *, interval_s: float = 0.02) -> float:
        """Seconds until ``ok()``; raise after ``timeout_s``."""
        t0 = time.monotonic()
        while not ok():
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"waited {timeout_s} s for {what}")
            time.sleep(interval_s)
        return time.monotonic() - t0

    def __enter__(self) -> Shop:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
