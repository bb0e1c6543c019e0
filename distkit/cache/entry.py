"""What a cached value looks like in Redis and in memory, and the pure decisions about it (no I/O).

A stored entry is one string: ``<expires_ms>,<stale_until_ms>,<delta_ms>,<null>|<codec payload>``. The header
carries the **logical** expiry (after it a reload is due), the end of the fail-safe window (until then the old
value may still be served when a reload fails or is slow) and how long the last load took (XFetch's delta).
The Redis key itself lives until ``stale_until`` (its physical TTL), so a stale value is there to be served.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any, Protocol

from distkit.errors import CacheCodecError


class Codec(Protocol):
    """Turns values into text and back; the default is :class:`JsonCodec` (never pickle)."""

    def dumps(self, value: Any) -> str: ...

    def loads(self, text: str) -> Any: ...


class JsonCodec:
    """Compact JSON (``ensure_ascii=False``: unicode stays as is). Tuples come back as lists, as JSON has no tuple."""

    def dumps(self, value: Any) -> str:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CacheCodecError(
                f"cannot JSON-encode {type(value).__name__} for the cache: {exc}; "
                "return JSON-compatible data from the loader or pass codec="
            ) from exc

    def loads(self, text: str) -> Any:
        return json.loads(text)


@dataclass(frozen=True, slots=True)
class Entry:
    value: Any
    expires_ms: int  # logical expiry: after it, a reload is due
    stale_until_ms: int  # end of the fail-safe window: after it the value is never served
    delta_ms: int  # how long the load that produced it took (XFetch)
    is_null: bool = False  # the loader said "no such id" (penetration guard)

    def fresh(self, now_ms: int) -> bool:
        return now_ms < self.expires_ms

    def usable(self, now_ms: int) -> bool:
        return now_ms < self.stale_until_ms


def encode(entry: Entry, codec: Codec) -> str:
    payload = "" if entry.is_null else codec.dumps(entry.value)
    return f"{entry.expires_ms},{entry.stale_until_ms},{entry.delta_ms},{int(entry.is_null)}|{payload}"


def decode(raw: str | bytes, codec: Codec) -> Entry:
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    try:
        head, payload = text.split("|", 1)
        e, s, d, n = head.split(",")
        is_null = n == "1"
        value = None if is_null else codec.loads(payload)
        return Entry(value, int(e), int(s), int(d), is_null)
    except ValueError as exc:
        raise CacheCodecError(f"cache entry {text[:60]!r} is not a distkit.cache envelope: {exc}") from exc


def jittered_ms(seconds: float, jitter: float, rnd: float) -> int:
    """``seconds`` spread uniformly over ``[1 - jitter, 1 + jitter]`` (``rnd`` in [0, 1)): keys written together
    expire apart (avalanche guard)."""
    return max(1, round(seconds * 1000 * (1 + jitter * (2 * rnd - 1))))


def xfetch(now_ms: int, entry: Entry, beta: float, rnd: float, min_delta_ms: int = 1) -> bool:
    """XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): refresh early when
    ``now - delta * beta * ln(rnd) >= expiry`` with ``rnd`` uniform in (0, 1]. The chance grows smoothly as the
    expiry nears and with how slow the load is; the first reader that draws it reloads in the background."""
    if beta <= 0 or now_ms >= entry.expires_ms:
        return False
    delta = max(entry.delta_ms, min_delta_ms)
    return now_ms - delta * beta * math.log(rnd) >= entry.expires_ms


def rand_open() -> float:
    """Uniform in (0, 1] (``log`` of it is finite)."""
    return 1.0 - random.random()
