"""Every classic bad token is rejected with its own error type; keys rotate through JWKS without a restart."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import pytest

from distkit.errors import (
    BadAudienceError,
    BadIssuerError,
    BadSignatureError,
    DisallowedAlgorithmError,
    InvalidArgumentError,
    MalformedTokenError,
    MissingClaimError,
    TokenExpiredError,
    TokenNotYetValidError,
    UnknownKeyError,
)
from distkit.gateway import JwksSource, JwtVerifier
from tests.gateway.conftest import AUDIENCE, ISSUER, Tokens, public_pem, rsa_key


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    head = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = b64(sign(head.encode())) if sign else ""
    return f"{head}.{sig}"


def verifier(tokens: Tokens, **kw: Any) -> JwtVerifier:
    return JwtVerifier({"k1": public_pem(tokens.key)}, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE,
                       leeway_s=kw.pop("leeway_s", 0), **kw)


def test_a_valid_token_is_accepted(tokens: Tokens) -> None:
    claims = verifier(tokens).verify(tokens.make(role="admin"))
    assert claims.subject == "user-1" and claims["role"] == "admin" and claims.issuer == ISSUER


def test_every_bad_token_is_rejected_with_its_own_type(tokens: Tokens) -> None:
    v = verifier(tokens)
    now = int(time.time())
    good_claims = {"sub": "u", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}
    pem = public_pem(tokens.key)
    cases: dict[str, tuple[str, type[Exception]]] = {
        "alg none": (forge({"alg": "none", "kid": "k1"}, good_claims), DisallowedAlgorithmError),
        "alg None": (forge({"alg": "None", "kid": "k1"}, good_claims), DisallowedAlgorithmError),
        # the RS/HS confusion attack: HMAC with the RSA *public* key as the secret
        "HS256 with the public key": (
            forge({"alg": "HS256", "kid": "k1"}, good_claims, lambda m: hmac.new(pem, m, hashlib.sha256).digest()),
            DisallowedAlgorithmError),
        "wrong kid": (tokens.make(kid="k9"), UnknownKeyError),
        "another key's signature": (tokens.make(key=rsa_key()), BadSignatureError),
        "expired": (tokens.make(exp=now - 10), TokenExpiredError),
        "not yet valid": (tokens.make(nbf=now + 600), TokenNotYetValidError),
        "wrong audience": (tokens.make(aud="other-api"), BadAudienceError),
        "wrong issuer": (tokens.make(iss="https://evil.example"), BadIssuerError),
        "no exp": (tokens.make(exp=None), MissingClaimError),
        "garbage": ("not.a.jwt", MalformedTokenError),
        "two segments": ("abc.def", MalformedTokenError),
        "tampered claims": (tokens.make().rsplit(".", 2)[0] + "." + b64(b'{"sub":"root"}') + "."
                            + tokens.make().rsplit(".", 1)[1], BadSignatureError),
    }
    seen: dict[str, type[Exception]] = {}
    for name, (token, expected) in cases.items():
        with pytest.raises(expected) as info:
            v.verify(token)
        assert type(info.value) is expected, name
        assert token not in str(info.value)  # never echo the token
        seen[name] = type(info.value)
    assert len(set(seen.values())) == 9  # the nine kinds of failure are told apart


def test_verifier_refuses_unsafe_configuration(tokens: Tokens) -> None:
    with pytest.raises(InvalidArgumentError):
        JwtVerifier({"k1": "s"}, algorithms=["none"])
    with pytest.raises(InvalidArgumentError):
        JwtVerifier({"k1": "s"}, algorithms=["HS256", "RS256"])
    with pytest.raises(InvalidArgumentError):
        JwtVerifier({}, algorithms=["RS256"])


def test_hs256_verifier_and_the_cache_never_serves_an_expired_token() -> None:
    secret = "s3cret-" * 6
    v = JwtVerifier({"hs": secret}, algorithms=["HS256"], leeway_s=0)
    token = jwt.encode({"sub": "u", "exp": time.time() + 1.0}, secret, algorithm="HS256", headers={"kid": "hs"})
    assert v.verify(token).subject == "u"
    assert v.verify(token).subject == "u"  # from the cache
    time.sleep(max(0.0, v.verify(token).expires_at + 0.05 - time.time()))
    with pytest.raises(TokenExpiredError):
        v.verify(token)


class _Jwks:
    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/.well-known/jwks.json"

    def add(self, key: Any, kid: str) -> None:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        self.keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})


def test_keys_rotate_through_jwks_without_a_restart(tokens: Tokens) -> None:
    jwks = _Jwks()
    try:
        jwks.add(tokens.key, "k1")
        source = JwksSource(jwks.url, refetch_cooldown_s=0)  # the default 30 s cooldown would delay the test
        v = JwtVerifier(source, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE)
        assert v.verify(tokens.make()).subject == "user-1"
        new_key = rsa_key()
        rotated = tokens.make(key=new_key, kid="k2")
        with pytest.raises(UnknownKeyError):
            v.verify(rotated)
        jwks.add(new_key, "k2")  # the identity provider publishes the new key
        assert v.verify(rotated).subject == "user-1"  # PyJWKClient refetches on the unknown kid
        assert jwks.fetches >= 2
    finally:
        jwks.server.shutdown()


def test_the_header_fast_path_never_accepts_what_pyjwt_rejects(tokens: Tokens) -> None:
    """distkit reads the header itself (to pick the key and pin ``alg``) and remembers a few header segments;
    odd headers must still be rejected with typed errors, and the memory stays bounded."""
    v = verifier(tokens, cache_size=0)
    now = int(time.time())
    claims = {"sub": "u", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}
    good = tokens.make()
    head, payload, sig = good.split(".")
    odd = {
        "not base64": "!!!." + payload + "." + sig,
        "a JSON list": b64(b'["RS256"]') + "." + payload + "." + sig,
        "not JSON": b64(b"\xff\xfe") + "." + payload + "." + sig,
        "no dots": head,
        "unicode header": b64(json.dumps({"alg": "RS256", "kid": "k1", "x": "\u00e9\U0001f600"}).encode())
        + "." + payload + "." + sig,  # a valid header whose signature no longer matches the signed input
    }
    for name, token in odd.items():
        with pytest.raises((MalformedTokenError, BadSignatureError)):
            v.verify(token)
        assert name
    # a header that PyJWT reads as another alg than distkit would be refused by PyJWT's pinned algorithms
    with pytest.raises(DisallowedAlgorithmError):
        v.verify(forge({"alg": "HS256", "kid": "k1"}, claims, lambda m: hmac.new(b"k", m, hashlib.sha256).digest()))
    for i in range(500):  # 500 distinct headers: each one parsed, at most 64 remembered
        with pytest.raises(BadSignatureError):
            v.verify(forge({"alg": "RS256", "kid": "k1", "n": i}, claims, lambda m: b"x" * 256))
    assert len(v._headers) <= 64
    assert v.verify(good).subject == "user-1"
