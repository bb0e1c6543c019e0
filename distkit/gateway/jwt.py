"""JWT verification on PyJWT, with algorithms pinned and every rejection its own error type.

Classic attacks are closed by construction: the token's ``alg`` must be one of ``algorithms`` (so ``none`` and
HS256-signed-with-the-RSA-public-key are refused before any key is touched), the key is chosen by ``kid``
only, ``exp`` is required. JWKS come from PyJWT's own :class:`jwt.PyJWKClient` (cached; an unknown ``kid``
triggers a refetch, so keys rotate without a restart). Verified tokens are cached by their SHA-256, bounded,
and never used past their ``exp``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt as pyjwt

from distkit.errors import (
    BadAudienceError,
    BadIssuerError,
    BadSignatureError,
    DisallowedAlgorithmError,
    InvalidArgumentError,
    InvalidTokenError,
    MalformedTokenError,
    MissingClaimError,
    TokenExpiredError,
    TokenNotYetValidError,
    UnknownKeyError,
)

_SYMMETRIC = frozenset({"HS256", "HS384", "HS512"})
_HEADER_CACHE_SIZE = 64  # distinct header segments remembered: an issuer signs every token with the same few


def _parse_header(segment: str) -> dict[str, Any]:
    """The JOSE header of a token's first segment. Only used to choose the key and pin ``alg``: PyJWT parses and
    checks the token again, so a header this parser reads differently is rejected there, never trusted."""
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        header = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise MalformedTokenError(f"not a JWT: bad header ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise MalformedTokenError("not a JWT: the header is not a JSON object")
    return header


@dataclass(frozen=True)
class Claims:
    """The verified claims. ``raw`` holds every claim; the common ones are attributes."""

    subject: str | None
    issuer: str | None
    audience: str | list[str] | None
    expires_at: int
    raw: Mapping[str, Any] = field(repr=False)

    def __getitem__(self, name: str) -> Any:
        return self.raw[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.raw.get(name, default)


class JwksSource:
    """Keys from a JWKS URL through :class:`jwt.PyJWKClient`: its cache (``cache_s``), and a refetch when a token
    names an unknown ``kid`` — at most once per ``refetch_cooldown_s``, so a flood of made-up kids can't turn
    the gateway into a JWKS hammer."""

    def __init__(self, url: str, *, cache_s: float = 300, timeout_s: float = 5, refetch_cooldown_s: float = 30) -> None:
        self.client = pyjwt.PyJWKClient(url, lifespan=cache_s, timeout=max(0.1, timeout_s),
                                        cooldown_duration=refetch_cooldown_s)

    def key_for(self, kid: str | None) -> Any:
        if kid is None:
            raise UnknownKeyError("token has no kid; a JWKS verifier needs one")
        try:
            return self.client.get_signing_key(kid).key
        except pyjwt.PyJWKClientError as exc:
            raise UnknownKeyError(f"no key with kid {kid!r} in the JWKS: {exc}") from exc


class JwtVerifier:
    """``verify(token) -> Claims`` or a subclass of :class:`~distkit.errors.InvalidTokenError`.

    ``keys``: a :class:`JwksSource`, or ``{kid: key}`` (PEM text, a cryptography key, or an HMAC secret).
    ``cache_size``: how many verified tokens to remember (0 disables the cache)."""

    def __init__(
        self,
        keys: JwksSource | Mapping[str, Any],
        *,
        algorithms: Sequence[str],
        issuer: str | None = None,
        audience: str | None = None,
        leeway_s: float = 30,
        require: Sequence[str] = ("exp",),
        cache_size: int = 10_000,
    ) -> None:
        algs = list(algorithms)
        if not algs or any(a.lower() == "none" for a in algs):
            raise InvalidArgumentError(f"algorithms must name real algorithms (never 'none'), got {algorithms!r}")
        if set(algs) & _SYMMETRIC and set(algs) - _SYMMETRIC:
            raise InvalidArgumentError("don't mix HMAC and public-key algorithms in one verifier (key confusion)")
        if not isinstance(keys, JwksSource) and not keys:
            raise InvalidArgumentError("JwtVerifier needs at least one key")
        self.keys = keys
        self.algorithms = algs
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = float(leeway_s)
        self.require = sorted(set(require) | {"exp"})
        self._cache: OrderedDict[bytes, Claims] = OrderedDict()
        self._cache_size = int(cache_size)
        self._lock = threading.Lock()
        self._options: dict[str, Any] = {"require": self.require, "verify_aud": self.audience is not None}
        self._headers: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"JwtVerifier(algorithms={self.algorithms}, issuer={self.issuer!r}, audience={self.audience!r})"

    def verify(self, token: str) -> Claims:
        if not isinstance(token, str) or not token:
            raise MalformedTokenError("no token")
        if not self._cache_size:
            return self._verify(token)
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None:
                if hit.expires_at > time.time():
                    self._cache.move_to_end(digest)
                    return hit
                del self._cache[digest]
        claims = self._verify(token)
        with self._lock:
            self._cache[digest] = claims
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return claims

    def _key(self, header: Mapping[str, Any]) -> Any:
        kid = header.get("kid")
        if isinstance(self.keys, JwksSource):
            return self.keys.key_for(kid)
        if kid is None:
            if len(self.keys) == 1:
                return next(iter(self.keys.values()))
            raise UnknownKeyError("token has no kid and the verifier holds several keys")
        try:
            return self.keys[kid]
        except KeyError:
            raise UnknownKeyError(f"no key with kid {kid!r}") from None

    def _verify(self, token: str) -> Claims:
        segment, dot, _ = token.partition(".")
        if not dot:
            raise MalformedTokenError("not a JWT: no '.' separated segments")
        header = self._headers.get(segment)
        if header is None:
            header = _parse_header(segment)
            if len(self._headers) >= _HEADER_CACHE_SIZE:
                self._headers.clear()  # a flood of distinct headers costs a re-parse, never unbounded memory
            self._headers[segment] = header
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise DisallowedAlgorithmError(f"algorithm {alg!r} is not allowed (expected one of {self.algorithms})")
        key = self._key(header)
        try:
            raw = pyjwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options=self._options,  # type: ignore[arg-type]
            )
        except pyjwt.ExpiredSignatureError:
            raise TokenExpiredError("token expired") from None
        except pyjwt.ImmatureSignatureError:
            raise TokenNotYetValidError("token not valid yet (nbf/iat in the future)") from None
        except pyjwt.InvalidAudienceError:
            raise BadAudienceError(f"token is not for audience {self.audience!r}") from None
        except pyjwt.InvalidIssuerError:
            raise BadIssuerError(f"token is not from issuer {self.issuer!r}") from None
        except pyjwt.MissingRequiredClaimError as exc:
            raise MissingClaimError(f"token lacks the {exc.claim!r} claim") from None
        except pyjwt.InvalidSignatureError:
            raise BadSignatureError("signature does not verify") from None
        except pyjwt.InvalidAlgorithmError as exc:
            raise DisallowedAlgorithmError(str(exc)) from None
        except pyjwt.InvalidKeyError as exc:
            raise BadSignatureError(f"key does not fit the algorithm: {exc}") from None
        except pyjwt.DecodeError as exc:
            raise MalformedTokenError(f"not a valid JWT: {exc}") from None
        except pyjwt.InvalidTokenError as exc:
            raise InvalidTokenError(f"token rejected: {type(exc).__name__}") from None
        aud = raw.get("aud")
        return Claims(raw.get("sub"), raw.get("iss"), aud, int(raw["exp"]), raw)
