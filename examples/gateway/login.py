"""The login service, reduced to what the gateway needs from it (signed tokens, the key that verifies them),
and a client that logs its users in once and sends their tokens."""

from __future__ import annotations

import secrets
import time

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from distkit.gateway import JwtVerifier

ISSUER, AUDIENCE = "https://login.shop.example", "shop-api"


class Login:
    """The identity provider: an RS256 key pair made at start. Only the public half reaches the gateway, and the
    private key is never printed or stored."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = f"login-{secrets.token_hex(4)}"

    def public_key(self) -> rsa.RSAPublicKey:
        """What the login service publishes (its JWKS); the gateway verifies with this alone."""
        return self._key.public_key()

    def verifier(self) -> JwtVerifier:
        return JwtVerifier({self.kid: self.public_key()}, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE)

    def token(self, user: str, *, ttl_s: int = 300) -> str:
        now = int(time.time())
        claims = {"sub": user, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + ttl_s}
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})


class Client:
    """Callers of the gateway: one login token per user, sent as ``Authorization: Bearer``."""

    def __init__(self, http: httpx.Client, login: Login) -> None:
        self.http, self.login, self.tokens = http, login, dict[str, str]()

    def auth(self, user: str) -> dict[str, str]:
        if user not in self.tokens:
            self.tokens[user] = self.login.token(user)
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def get(self, user: str, n: int, **headers: str) -> httpx.Response:
        return self.http.get(f"/orders/{n}", headers={**self.auth(user), **headers})
