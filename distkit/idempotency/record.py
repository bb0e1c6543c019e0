"""Idempotency records and the decisions taken on them, shared by every store and by sync/async callers.

States: absent → IN_PROGRESS (owner token, started_at) → COMPLETED (result, payload hash, expiry). What a
caller does with a store's answer is decided here, with no I/O.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from distkit.errors import IdempotencyInProgressError, IdempotencyKeyMismatchError


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

    @property
    def must_run(self) -> bool:
        return self.outcome in (Outcome.CLAIMED, Outcome.RECLAIMED)


def payload_hash(payload: Any) -> str:
    """A stable hash of the payload (canonical JSON); empty when no payload is checked."""
    if payload is None:
        return ""
    from distkit.idempotency.codec import _to_json

    canonical = json.dumps(_to_json(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def check_payload(key: str, stored: str, given: str) -> None:
    """Same key, different payload: a client bug, never a duplicate."""
    if stored and given and stored != given:
        raise IdempotencyKeyMismatchError(
            f"idempotency key {key!r} was first used with a different payload (hash {stored}, now {given}); "
            "use a new key for a different request"
        )


def in_progress_error(key: str, res: BeginResult, in_progress_ttl_ms: int) -> IdempotencyInProgressError:
    left = max(0, in_progress_ttl_ms - res.age_ms)
    return IdempotencyInProgressError(
        f"key {key!r} is being processed by another caller (started {res.age_ms} ms ago); retry later or pass "
        f"wait_s. If that caller died, the key can be reclaimed in {left} ms"
    )


@dataclass(frozen=True)
class StoredOutcome:
    """What a COMPLETED record holds: a value, or a failure the handler's author chose to store."""

    ok: bool
    value: Any = None
    error_type: str = ""
    error_message: str = ""

    def envelope(self) -> Any:
        if self.ok:
            return {"ok": True, "value": self.value}
        return {"ok": False, "type": self.error_type, "message": self.error_message}

    @classmethod
    def from_envelope(cls, env: Any) -> StoredOutcome:
        if env.get("ok"):
            return cls(ok=True, value=env.get("value"))
        return cls(ok=False, error_type=env.get("type", ""), error_message=env.get("message", ""))
