"""Keys and tokens for the gateway tests."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://auth.example"
AUDIENCE = "shop-api"


def rsa_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class Tokens:
    def __init__(self) -> None:
        self.key = rsa_key()
        self.kid = "k1"

    def make(self, *, key: Any = None, kid: str | None = "k1", alg: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        body = {"sub": "user-1", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        headers = {"kid": kid} if kid is not None else {}
        return jwt.encode(body, key if key is not None else self.key, algorithm=alg, headers=headers)


@pytest.fixture(scope="session")
def tokens() -> Tokens:
    return Tokens()
