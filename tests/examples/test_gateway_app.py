"""The gateway reference app on the real Redis and Kafka: its invariants, a clean shutdown, and two attempts to
break its guarantees (forged identities; an instance dying under concurrent load)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections import Counter
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from distkit.ratelimit import Rate
from examples._wiring import Wiring
from examples.gateway import main
from examples.gateway.login import AUDIENCE, ISSUER
from examples.gateway.shop import Shop


@pytest.mark.slow
def test_the_app_holds_its_invariants_and_leaves_nothing_running(wiring: Wiring) -> None:
    threads_before = set(threading.enumerate())
    t0 = time.monotonic()
    story = main(wiring)
    took = time.monotonic() - t0
    assert story.checks == dict.fromkeys([
        "no_valid_token_gets_401", "breaker_opened_and_fallback_answered", "round_robin_even",
        "forged_user_header_dropped", "rate_limit_429_with_headers", "no_failed_get_after_kill",
        "killed_instance_ejected", "one_trace_id_end_to_end"], True)
    f = story.facts
    assert f["spread"] == {"order-a": 20, "order-b": 20}  # round-robin: exactly half each
    assert f["pricing_calls_while_down"] == 8  # 4 failed calls per instance opened its breaker; none after
    assert f["failed_gets_after_kill"] == 0
    assert f["attempts_on_killed_instance"] == 3  # consecutive_failures, then ejected: never tried again
    assert isinstance(f["rate_limited"], int) and f["rate_limited"] >= 1
    ids = f["trace_ids"]
    assert isinstance(ids, dict) and len(ids["client"]) == 32 and ids["client"] == ids["service"] == ids["consumer"]
    assert took < 20
    # nothing left behind: every thread the run started has ended, every port it served refuses connections
    deadline = time.monotonic() + 5
    while (left := [t.name for t in set(threading.enumerate()) - threads_before if t.is_alive()]) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []
    ports = f["ports"]
    assert isinstance(ports, list) and len(ports) == 4  # gateway, pricing, order-a, order-b
    for port in ports:
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))


def _segment(data: dict[str, Any]) -> bytes:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")


def _hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """A token HMAC-signed with ``secret`` by hand (PyJWT refuses a PEM as an HMAC secret, an attacker won't)."""
    signing = _segment({"alg": "HS256", "typ": "JWT", "kid": kid}) + b"." + _segment(claims)
    mac = base64.urlsafe_b64encode(hmac.new(secret, signing, hashlib.sha256).digest()).rstrip(b"=")
    return (signing + b"." + mac).decode()


def test_forged_identities_never_reach_an_instance_and_cannot_dodge_the_rate_limit(wiring: Wiring) -> None:
    with Shop(wiring, per_user=Rate(1, per_s=60.0), burst=3) as shop, httpx.Client(base_url=shop.url) as client:
        kid = shop.login.kid
        now = int(time.time())
        claims = {"sub": "admin", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
        public_pem = shop.login.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
        own_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        real = shop.login.token("mallory")
        header, _, signature = real.split(".")
        forgeries = {
            "BadSignatureError": jwt.encode(claims, own_key, algorithm="RS256", headers={"kid": kid}),
            "DisallowedAlgorithmError": jwt.encode(claims, None, algorithm="none", headers={"kid": kid}),
            "UnknownKeyError": jwt.encode(claims, own_key, algorithm="RS256", headers={"kid": "login-other"}),
        }
        key_confusion = _hs256(claims, public_pem, kid)  # HS256 keyed with the public key
        swapped = f"{header}.{_segment(claims).decode()}.{signature}"  # mallory's signature, admin's claims
        for name, token in [*forgeries.items(), ("DisallowedAlgorithmError", key_confusion),
                            ("BadSignatureError", swapped)]:
            r = client.get("/orders/1", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401 and r.json()["reason"] == name
            assert r.headers["www-authenticate"].startswith('Bearer realm="distkit", error="invalid_token"')
        assert sum(o.served for o in shop.orders.values()) == 0  # not one forged request reached an instance

        # a real token plus a forged x-user-id: the service sees the token's subject, and the limit follows it
        auth = {"Authorization": f"Bearer {real}"}
        replies = [client.get(f"/orders/{n}", headers={**auth, "x-user-id": f"victim-{n}"}) for n in range(5)]
        assert [r.status_code for r in replies] == [200, 200, 200, 429, 429]  # burst 3, then 1/min
        assert {r.json()["user"] for r in replies[:3]} == {"mallory"}
        assert sum(o.served for o in shop.orders.values()) == 3


def test_an_instance_dying_under_concurrent_load_fails_no_get(wiring: Wiring) -> None:
    with Shop(wiring, per_user=Rate(10_000, per_s=1.0), burst=10_000) as shop:
        stop, codes = threading.Event(), Counter[int]()
        served_during: list[str] = []

        def caller(user: str) -> None:
            with httpx.Client(base_url=shop.url, timeout=10) as client:
                auth = {"Authorization": f"Bearer {shop.login.token(user)}"}
                n = 0
                while not stop.is_set():
                    r = client.get(f"/orders/{n}", headers=auth)
                    codes[r.status_code] += 1
                    served_during.append(r.json()["instance"] if r.status_code == 200 else f"{r.status_code}: {r.text}")
                    n += 1

        callers = [threading.Thread(target=caller, args=(f"user-{i}",)) for i in range(6)]
        for t in callers:
            t.start()
        shop.wait_until(lambda: len(served_during) >= 60, 10, "traffic to both instances")
        shop.kill("order-a")  # mid-flight: some requests are in order-a or on their way to it right now
        killed_at = len(served_during)
        shop.wait_until(lambda: len(served_during) >= killed_at + 100, 10, "100 more answers")
        stop.set()
        for t in callers:
            t.join(10)
        # every GET answered: refused (or reset) connections were retried on order-b
        assert set(codes) == {200}, [s for s in served_during if not s.startswith("order-")]
        assert {"order-a", "order-b"} <= set(served_during[:killed_at])
        # once the port closed, only requests already inside order-a (at most one per caller) came from it
        assert served_during[killed_at:].count("order-a") <= len(callers)
        assert served_during[-1] == "order-b"
