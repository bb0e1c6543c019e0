"""The Gateway over real sockets (uvicorn), with backend processes registered in the real Redis."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from distkit.gateway import Gateway, JwtVerifier, OutlierDetector, RoundRobin, ServiceInstance, ServiceRegistry
from distkit.ratelimit import MemoryBackend, Rate, TokenBucket
from tests.gateway.conftest import AUDIENCE, ISSUER, Tokens, public_pem
from tests.gateway.test_registry import start_backend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def wait_for(pred: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.fixture
def verifier(tokens: Tokens) -> JwtVerifier:
    return JwtVerifier({"k1": public_pem(tokens.key)}, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE)


@pytest.fixture
def backends(redis_url: str, namespace: str) -> Iterator[list[Any]]:
    procs = [start_backend(redis_url, namespace, f"b{i}") for i in range(2)]
    yield procs
    for p, _ in procs:
        p.kill()
        p.wait()


@pytest.mark.slow
def test_end_to_end_spread_failover_auth_rate_limit_and_trace(
    tokens: Tokens, verifier: JwtVerifier, backends: list[Any], redis_client: Any, namespace: str
) -> None:
    registry = ServiceRegistry(redis_client, namespace=namespace, ttl_s=2)
    limiter = TokenBucket(Rate(1, per_s=60.0), burst=3, backend=MemoryBackend())

    class PerUser:  # only "greedy" is limited, so the load below is not
        def acquire(self, key: str) -> Any:
            if key == "user:greedy":
                return limiter.acquire(key)
            return _Allowed()

    gw = Gateway(registry, verifier, routes={"/orders": "order"}, balancer=RoundRobin(), rate_limiter=PerUser())
    wait_for(lambda: len(gw.instances("order")) == 2)
    served = Served(gw)
    token = tokens.make()
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=served.url, timeout=10) as client:
            def get(i: int) -> Any:
                return client.get(f"/orders/{i}", headers=auth)

            with ThreadPoolExecutor(8) as pool:
                replies = list(pool.map(get, range(1000)))
            assert {r.status_code for r in replies} == {200}
            spread = Counter(r.json()["backend"] for r in replies)
            assert spread == {"b0": 500, "b1": 500}  # round-robin over two live instances
            assert {r.json()["user"] for r in replies} == {"user-1"}

            # the trace id survives the hop (W3C traceparent in, same trace id out)
            tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            echoed = client.get("/orders/t", headers={**auth, "traceparent": tp}).json()["traceparent"]
            assert echoed.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"

            # bad or missing tokens: 401 with a challenge; unknown route: 404
            bad = client.get("/orders/1", headers={"Authorization": f"Bearer {token[:-4]}AAAA"})
            assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]
            assert bad.json()["reason"] == "BadSignatureError"
            none = client.get("/orders/1")
            assert none.status_code == 401 and none.headers["www-authenticate"].startswith("Bearer")
            assert client.get("/nothing", headers=auth).status_code == 404
            # a forged user header never reaches the backend
            forged = client.get("/orders/1", headers={**auth, "x-user-id": "admin"}).json()
            assert forged["user"] == "user-1"

            # rate limit: 429 with Retry-After and RateLimit headers
            greedy = {"Authorization": f"Bearer {tokens.make(sub='greedy')}"}
            codes = [client.get("/orders/1", headers=greedy) for _ in range(5)]
            assert [c.status_code for c in codes] == [200, 200, 200, 429, 429]
            assert int(codes[3].headers["retry-after"]) >= 1 and "ratelimit" in codes[3].headers

            # kill one backend: idempotent requests keep succeeding (retry on the other instance)...
            proc, _ = backends[0]
            proc.kill()
            proc.wait()
            with ThreadPoolExecutor(8) as pool:
                after = list(pool.map(get, range(200)))
            assert {r.status_code for r in after} == {200}
            # ...and once its ttl is over the registry no longer lists it
            wait_for(lambda: [i.metadata["name"] for i in gw.instances("order")] == ["b1"], timeout=10)
            assert Counter(get(i).json()["backend"] for i in range(20)) == {"b1": 20}
            # a POST is not retried on another instance: with no instance at all it is a clean 503
            backends[1][0].kill()
            backends[1][0].wait()
            wait_for(lambda: gw.instances("order") == [], timeout=10)
            assert client.post("/orders", headers=auth, content=b"{}").status_code == 503
    finally:
        served.stop()
        gw.close()


class _Allowed:
    allowed = True

    def headers(self) -> dict[str, str]:
        return {}


@pytest.mark.slow
def test_a_backend_answering_503_is_ejected_and_comes_back(
    tokens: Tokens, verifier: JwtVerifier, redis_url: str, redis_client: Any, namespace: str, tmp_path: Path
) -> None:
    flag = tmp_path / "healthy"
    good = start_backend(redis_url, namespace, "good")
    flaky = start_backend(redis_url, namespace, "flaky", str(flag))
    registry = ServiceRegistry(redis_client, namespace=namespace, ttl_s=2)
    now = [0.0]  # the detector's clock, moved by hand
    gw = Gateway(registry, verifier, routes={"/orders": "order"}, balancer=RoundRobin(),
                 outlier=OutlierDetector(consecutive_failures=3, base_ejection_s=30, max_ejected_share=0.5,
                                         clock=lambda: now[0]))
    wait_for(lambda: len(gw.instances("order")) == 2)
    served = Served(gw)
    auth = {"Authorization": f"Bearer {tokens.make()}"}
    try:
        with httpx.Client(base_url=served.url, timeout=10) as client:
            first = [client.get("/orders/1", headers=auth) for _ in range(6)]
            assert Counter(r.status_code for r in first) == {200: 3, 503: 3}  # alternating until ejected
            during = [client.get("/orders/1", headers=auth) for _ in range(20)]
            assert {r.json()["backend"] for r in during} == {"good"} and {r.status_code for r in during} == {200}
            flag.write_text("ok")  # the dependency recovers
            now[0] += 31  # the ejection interval is over
            back = Counter(client.get("/orders/1", headers=auth).json()["backend"] for _ in range(10))
            assert back == {"good": 5, "flaky": 5}  # after the ejection it gets traffic again
    finally:
        served.stop()
        gw.close()
        for p, _ in (good, flaky):
            p.kill()
            p.wait()


class Resetter:
    """A backend that reads the request, then resets the connection (SO_LINGER 0): what the gateway sees when an
    instance dies while its pooled keep-alive connection is open."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)  # accept() wakes up to notice close()
        self.port = int(self.sock.getsockname()[1])
        self.requests = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            conn.recv(65536)
            self.requests += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


def test_a_connection_reset_before_the_answer_is_retried_for_gets_and_a_502_for_posts(
    tokens: Tokens, verifier: JwtVerifier, redis_url: str, redis_client: Any, namespace: str
) -> None:
    """Regression: httpx.ReadError (connection reset while waiting for the answer) escaped the gateway as a 500."""
    good = start_backend(redis_url, namespace, "good")
    resetter = Resetter()
    registry = ServiceRegistry(redis_client, namespace=namespace, ttl_s=5)
    reg = registry.register(ServiceInstance("order", "127.0.0.1", resetter.port, metadata={"name": "resetter"}))
    gw = Gateway(registry, verifier, routes={"/orders": "order"}, balancer=RoundRobin(),
                 outlier=OutlierDetector(consecutive_failures=100))
    wait_for(lambda: len(gw.instances("order")) == 2)
    served = Served(gw)
    auth = {"Authorization": f"Bearer {tokens.make()}"}
    try:
        with httpx.Client(base_url=served.url, timeout=10) as client:
            first = gw.instances("order")[0].metadata["name"]
            gets = [client.get(f"/orders/{i}", headers=auth) for i in range(6)]
            assert [r.status_code for r in gets] == [200] * 6 and {r.json()["backend"] for r in gets} == {"good"}
            # a failed try and its retry take two turns of the round-robin, so the resetter is tried first by
            # every GET from its first turn on
            assert resetter.requests == (6 if first == "resetter" else 5)
            posts = Counter(client.post("/orders", headers=auth, content=b"{}").status_code for _ in range(4))
            assert posts == {200: 2, 502: 2}  # never retried (it may have acted), never a 500
            assert resetter.requests == (8 if first == "resetter" else 7)
    finally:
        served.stop()
        gw.close()
        reg.deregister()
        resetter.close()
        good[0].kill()
        good[0].wait()
