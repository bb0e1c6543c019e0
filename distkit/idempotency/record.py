"""Idempotency records and the decisions taken on them, shared by every store and by sync/async callers.

States: absent → IN_PROGRESS (owner token, started_at) → COMPLETED (result, payload hash, expiry). What a
caller does with a store's answer is decided here, with no I/O.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from distkit.errors import CodecError, IdempotencyInProgressError, IdempotencyKeyMismatchError


class Outcome(enum.Enum):
    CLAIMED = "claimed"  # absent (or expired) → this caller owns the key and must run the handler
    RECLAIMED = "reclaimed"  # a stale IN_PROGRESS (owner presumed dead) was taken over by this caller
    COMPLETED = "completed"  # a result is stored: return it
    IN_PROGRESS = "in_progress"  # someone else is running it right now


@dataclass(frozen=True)
class BeginResult:
    """A store's answer to "may I run this key?"."""

    outcome: Outcome
    payload_hash: str = ""
    result: bytes | None = None
    age_ms: int = 0
    ttl_left_ms: int = -1  # COMPLETED: how long the record lives on (-1: unknown)

    @property
    def must_run(self) -> bool:
        return self.outcome in (Outcome.CLAIMED, Outcome.RECLAIMED)


HASH_VERSION = "2:"  # hashes without a version prefix were made by the old, per-process scheme


def _number(value: int | float | Decimal) -> Any:
    """Equal numbers canonicalise alike: ``1``, ``1.0`` and ``Decimal("1.00")`` → ``1``; ``0.5`` and
    ``Decimal("0.50")`` → ``["num", "0.5"]``."""
    if isinstance(value, int):
        return int(value)
    d = Decimal(repr(value)) if isinstance(value, float) else value
    if d.is_nan():
        return ["nan"]
    if d.is_infinite():
        return ["inf", 1 if d > 0 else -1]
    if d == d.to_integral_value():
        return int(d)
    return ["num", str(d.normalize())]


def _sort_key(canonical: Any) -> str:
    return json.dumps(canonical, separators=(",", ":"), ensure_ascii=False)


def canonical(value: Any) -> Any:
    """A JSON-able form that is the same in every process for equal payloads: dict entries and set members
    sorted, numbers normalised, every non-JSON type tagged (so ``"1"`` never meets ``1``)."""
    if value is None or value is True or value is False or value.__class__ is str:
        return value
    if isinstance(value, enum.Enum):
        return ["enum", f"{type(value).__module__}:{type(value).__qualname__}", canonical(value.value)]
    if isinstance(value, int | float | Decimal):
        return _number(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        items = [[canonical(k), canonical(v)] for k, v in value.items()]
        return ["map", sorted(items, key=lambda kv: _sort_key(kv[0]))]
    if isinstance(value, list | tuple):
        return ["seq", [canonical(v) for v in value]]
    if isinstance(value, set | frozenset):
        return ["set", sorted((canonical(v) for v in value), key=_sort_key)]
    if isinstance(value, bytes | bytearray | memoryview):
        return ["bytes", base64.b64encode(bytes(value)).decode("ascii")]
    if isinstance(value, uuid.UUID):
        return ["uuid", str(value)]
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            return ["datetime", value.astimezone(dt.timezone.utc).isoformat()]
        return ["datetime", value.isoformat()]
    if isinstance(value, dt.date):
        return ["date", value.isoformat()]
    if isinstance(value, dt.time):
        return ["time", value.isoformat()]
    if isinstance(value, dt.timedelta):
        return ["timedelta", (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = f"{type(value).__module__}:{type(value).__qualname__}"
        return ["dataclass", name, canonical({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})]
    raise CodecError(
        f"cannot hash a payload of type {type(value).__name__}: pass payload= a function returning JSON-like data "
        "(dict/list/str/number/bool/None, UUID, datetime, Decimal, bytes, set, Enum, dataclass)"
    )


def payload_hash(payload: Any) -> str:
    """A stable hash of the payload (its :func:`canonical` form); empty when no payload is checked. The same in
    every process, whatever its hash seed or the payload's dict insertion order."""
    if payload is None:
        return ""
    text = json.dumps(canonical(payload), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return HASH_VERSION + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def check_payload(key: str, stored: str, given: str) -> None:
    """Same key, different payload: a client bug, never a duplicate. A record hashed by the old scheme (no
    version prefix, from before an upgrade) is not compared: that scheme differed between processes."""
    if stored and given and stored != given and stored.startswith(HASH_VERSION):
        raise IdempotencyKeyMismatchError(
            f"idempotency key {short(key)} was first used with a different payload (hash {stored}, now {given}); "
            "use a new key for a different request"
        )


def short(key: str, limit: int = 120) -> str:
    """``repr(key)``, shortened for messages."""
    return repr(key) if len(key) <= limit else repr(key[:limit]) + f"… ({len(key)} characters)"


def in_progress_error(key: str, res: BeginResult, in_progress_ttl_ms: int) -> IdempotencyInProgressError:
    left = max(0, in_progress_ttl_ms - res.age_ms)
    return IdempotencyInProgressError(
        f"key {short(key)} is being processed by another caller (started {res.age_ms} ms ago); retry later or pass "
        f"wait_s. If that caller died, the key can be reclaimed in {left} ms"
    )


@dataclass(frozen=True)
class StoredOutcome:
    """What a COMPLETED record holds: a value, a failure the handler's author chose to store, or the note that
    the handler ran but its result could not be encoded (``unstorable``)."""

    ok: bool
    value: Any = None
    error_type: str = ""  # qualname (what older records hold) or module:qualname
    error_message: str = ""
    error_args: tuple[Any, ...] | None = None
    error_attrs: dict[str, Any] = field(default_factory=dict)
    unstorable: bool = False

    def envelope(self) -> Any:
        if self.ok:
            return {"ok": True, "value": self.value}
        env: dict[str, Any] = {"ok": False, "type": self.error_type, "message": self.error_message}
        if self.error_args is not None:
            env["args"] = list(self.error_args)
        if self.error_attrs:
            env["attrs"] = self.error_attrs
        if self.unstorable:
            env["unstorable"] = True
        return env

    @classmethod
    def from_envelope(cls, env: Any) -> StoredOutcome:
        if env.get("ok"):
            return cls(ok=True, value=env.get("value"))
        args = env.get("args")
        return cls(
            ok=False,
            error_type=env.get("type", ""),
            error_message=env.get("message", ""),
            error_args=tuple(args) if isinstance(args, list) else None,
            error_attrs=env.get("attrs") or {},
            unstorable=bool(env.get("unstorable")),
        )


@dataclass(frozen=True)
class IdempotencyRecord:
    """What a ``response_hook`` is told about the stored record it replays (Powertools' ``DataRecord``)."""

    key: str  # the full key (scope included)
    payload_hash: str
    expires_in_ms: int  # -1 when the store did not say
    from_local_cache: bool
