"""What each primitive stores in Redis and how its scripts are called: no I/O here.

Two storage shapes:

* **exclusive** (``lock``, ``fair_lock``): one string ``{ns:name}`` = ``"<owner> <hold count> <token>"``
  whose TTL is the lease (Redisson keeps a hash; one string lets the uncontended acquire be a single
  ``SET NX PX`` inside the script, which keeps a cycle as fast as redis-py's non-reentrant ``Lock``). A fair
  lock adds a queue ``{ns:name}:queue`` and its deadlines ``{ns:name}:queue-ttl``.
* **shared** (``rw_lock`` sides, ``semaphore``): a hash ``{ns:name}`` of per-hold counts and tokens plus a
  zset ``{ns:name}:holds`` of per-hold lease ends, so one dead reader (or permit holder) expires on its
  own lease without taking the others with it; ``{ns:name}:writers`` marks waiting writers. The hash also
  keeps the object's configuration (``cfg``: ``rw:<prefer writers>`` or ``s:<permits>``), so two processes
  configured differently cannot both act on one object.

All keys of one object share a hash tag, so every script touches a single Redis Cluster slot. Key parts are
escaped (:func:`object_key`), so namespace ``"a:b"`` + name ``"c"`` and namespace ``"a"`` + name ``"b:c"``
are different objects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from distkit._redis import Script, key
from distkit.locks.ops import Call, Command, Flow

LOCK_ACQUIRE = Script("locks", "lock_acquire")
LOCK_RELEASE = Script("locks", "lock_release")
LOCK_RENEW = Script("locks", "lock_renew")
LEAVE = Script("locks", "leave")
FORCE_UNLOCK = Script("locks", "force_unlock")
SHARED_ACQUIRE = Script("locks", "shared_acquire")
SHARED_RELEASE = Script("locks", "shared_release")
SHARED_RENEW = Script("locks", "shared_renew")
SHARED_STATE = Script("locks", "shared_state")
SEMAPHORE_ADJUST = Script("locks", "semaphore_adjust")

# acquire replies other than the token: {status, value}
BUSY, UPGRADE, MISMATCH, GONE, CONFLICT, TOO_MANY = 0, -1, -2, -3, -4, -5
# release replies (an exclusive lock held by another owner answers {OTHER, its token, server time in us})
FREED, DECREMENTED, ALREADY_DONE, NOT_HELD, PARTIAL, OTHER = 1, 0, 2, -1, 3, -3


def _escape(part: str, specials: str) -> str:
    """Percent-encode ``%`` and ``specials`` (a no-op for ordinary names: the fast path is one scan)."""
    if "%" not in part and not any(c in part for c in specials):
        return part
    out = part.replace("%", "%25")
    for c in specials:
        out = out.replace(c, f"%{ord(c):02X}")
    return out


def object_key(namespace: str, name: str, suffix: str | None = None) -> str:
    """The Redis key of a lock object: ``{namespace:name}[:suffix]`` with the namespace's ``:`` and both
    parts' braces and ``%`` escaped, so the separator is unambiguous and the hash tag cannot be broken."""
    return key(_escape(namespace, ":{}"), _escape(name, "{}"), suffix)


def _encoded(*keys: str) -> tuple[bytes, bytes, bytes, bytes]:
    """Keys are sent as bytes: the client then skips encoding them on every call (hot path)."""
    a, b, c, d = (k.encode() for k in keys)
    return a, b, c, d


def parse_pair(reply: Sequence[Any]) -> tuple[int, Any]:
    """``{status, value}`` from an acquire script that did not grant the hold (``value`` is the stored
    configuration, a str, for ``CONFLICT``)."""
    status = int(reply[0])
    value = reply[1]
    if status == CONFLICT:
        return status, value.decode() if isinstance(value, bytes) else str(value)
    return status, int(value)


@dataclass(frozen=True)
class Spec:
    """Common fields: the user's name, the hold key (unique per lock side) and the wake-up channel."""

    namespace: str
    name: str
    kind: str
    hold_key: str = field(init=False)
    channel: str = field(init=False)
    recheck_cap_s: float = field(default=math.inf, init=False)
    upgrade_from: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hold_key", f"{object_key(self.namespace, self.name)}#{self.kind}")
        object.__setattr__(self, "channel", object_key(self.namespace, self.name, "ch"))

    def acquire_call(
        self, holder: str, expected: int, lease_ms: int, enqueue: bool, deadline: float | None = None, units: int = 1
    ) -> Call:
        raise NotImplementedError

    def release_call(
        self, holder: str, token: bytes | str, expected: int, deadline: float | None = None, units: int = 0,
        believed_units: int | None = None,
    ) -> Call:
        raise NotImplementedError

    def renew_call(self, holder: str, token: bytes | str, lease_ms: int, deadline: float | None = None) -> Call:
        raise NotImplementedError

    def leave_call(self, holder: str, deadline: float | None = None) -> Call | None:
        """The call that drops a waiter's place in a queue, or None when waiting leaves no trace."""
        return None

    def force_call(self, deadline: float | None = None) -> Call:
        raise NotImplementedError

    def state(self, holder: str, deadline: float | None = None) -> Flow[tuple[bool, bool]]:
        """(is it held by anyone, is it held by ``holder``)."""
        raise NotImplementedError

    def remaining(self, deadline: float | None = None) -> Flow[int | None]:
        """How long the object stays held if nobody renews or releases it (ms), None when free."""
        raise NotImplementedError


@dataclass(frozen=True)
class ExclusiveSpec(Spec):
    """A reentrant exclusive lock; ``waiter_ttl_ms`` > 0 makes it fair (FIFO among waiters)."""

    kind: str = "x"
    waiter_ttl_ms: int = 0
    keys: tuple[bytes, bytes, bytes, bytes] = field(init=False)
    _lock_key: tuple[bytes] = field(init=False)
    _release_keys: tuple[bytes, ...] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        ns, name = self.namespace, self.name
        keys = _encoded(
            object_key(ns, name), object_key(ns, name, "queue"), object_key(ns, name, "queue-ttl"), self.channel
        )
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "_lock_key", keys[:1])
        release_keys = (keys[0], keys[3], keys[1]) if self.waiter_ttl_ms else (keys[0], keys[3])
        object.__setattr__(self, "_release_keys", release_keys)
        if self.waiter_ttl_ms:
            # a live waiter refreshes its place three times per waiter ttl
            object.__setattr__(self, "recheck_cap_s", self.waiter_ttl_ms / 3000)

    def acquire_call(
        self, holder: str, expected: int, lease_ms: int, enqueue: bool, deadline: float | None = None, units: int = 1
    ) -> Call:
        if not self.waiter_ttl_ms:  # plain lock: the short form keeps the hot path lean
            return Call(LOCK_ACQUIRE, self._lock_key, (holder, expected, lease_ms), deadline)
        args = (holder, expected, lease_ms, self.waiter_ttl_ms, 1 if enqueue else 0)
        return Call(LOCK_ACQUIRE, self.keys, args, deadline)

    def release_call(
        self, holder: str, token: bytes | str, expected: int, deadline: float | None = None, units: int = 0,
        believed_units: int | None = None,
    ) -> Call:
        return Call(LOCK_RELEASE, self._release_keys, (holder, token, expected), deadline)

    def renew_call(self, holder: str, token: bytes | str, lease_ms: int, deadline: float | None = None) -> Call:
        return Call(LOCK_RENEW, self._lock_key, (holder, token, lease_ms), deadline)

    def leave_call(self, holder: str, deadline: float | None = None) -> Call | None:
        if not self.waiter_ttl_ms:
            return None
        return Call(LEAVE, self.keys[1:], (holder,), deadline)

    def force_call(self, deadline: float | None = None) -> Call:
        return Call(FORCE_UNLOCK, (self.keys[0], self.keys[3]), (), deadline)

    def state(self, holder: str, deadline: float | None = None) -> Flow[tuple[bool, bool]]:
        value = yield Command(("GET", self.keys[0]), deadline)
        if isinstance(value, bytes):
            value = value.decode()
        return value is not None, value is not None and value.split(" ", 1)[0] == holder

    def remaining(self, deadline: float | None = None) -> Flow[int | None]:
        ttl = int((yield Command(("PTTL", self.keys[0]), deadline)))
        return ttl if ttl >= 0 else None


@dataclass(frozen=True)
class SharedSpec(Spec):
    """One side of a read-write lock (``kind`` ``r`` / ``w``) or a semaphore (``s``, ``limit`` = permits).

    For ``r`` / ``w``, ``limit`` = 1 means *prefer writers*: a waiting writer stops new readers.
    """

    kind: str = "r"
    limit: int = 0
    waiter_ttl_ms: int = 10_000
    config_ttl_ms: int = 86_400_000
    keys: tuple[bytes, bytes, bytes, bytes] = field(init=False)
    config: str = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        ns, name = self.namespace, self.name
        keys = _encoded(
            object_key(ns, name), object_key(ns, name, "holds"), object_key(ns, name, "writers"), self.channel
        )
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "config", f"s:{self.limit}" if self.kind == "s" else f"rw:{self.limit}")
        if self.kind == "w":
            object.__setattr__(self, "upgrade_from", f"{object_key(ns, name)}#r")
            if self.limit == 1:
                object.__setattr__(self, "recheck_cap_s", self.waiter_ttl_ms / 3000)

    def acquire_call(
        self, holder: str, expected: int, lease_ms: int, enqueue: bool, deadline: float | None = None, units: int = 1
    ) -> Call:
        # a try-lock writer does not register as waiting (it must not make readers wait)
        waits = 1 if enqueue or self.kind != "w" else 0
        args = (self.kind, holder, expected, lease_ms, self.limit, self.waiter_ttl_ms, self.config, units, waits)
        return Call(SHARED_ACQUIRE, self.keys, args, deadline)

    def release_call(
        self, holder: str, token: bytes | str, expected: int, deadline: float | None = None, units: int = 0,
        believed_units: int | None = None,
    ) -> Call:
        believed = "" if believed_units is None else believed_units
        args = (self.kind, holder, token, expected, units, believed)
        return Call(SHARED_RELEASE, (self.keys[0], self.keys[1], self.keys[3]), args, deadline)

    def renew_call(self, holder: str, token: bytes | str, lease_ms: int, deadline: float | None = None) -> Call:
        return Call(SHARED_RENEW, self.keys[:2], (self.kind, holder, token, lease_ms), deadline)

    def leave_call(self, holder: str, deadline: float | None = None) -> Call | None:
        if self.kind != "w" or self.limit != 1:
            return None
        keys = (object_key(self.namespace, self.name, "none"), self.keys[2], self.keys[3])
        return Call(LEAVE, keys, (holder,), deadline)

    def force_call(self, deadline: float | None = None) -> Call:
        return Call(FORCE_UNLOCK, (self.keys[0], self.keys[1], self.keys[2], self.keys[3]), (), deadline)

    def adjust_call(self, op: str, n: int, deadline: float | None = None) -> Call:
        args = (self.config, self.limit, op, n, self.config_ttl_ms)
        return Call(SEMAPHORE_ADJUST, (self.keys[0], self.keys[1], self.keys[3]), args, deadline)

    def _state(self, holder: str, deadline: float | None) -> Flow[list[Any]]:
        reply = yield Call(SHARED_STATE, self.keys[:2], (self.kind, holder), deadline)
        return list(reply)

    def state(self, holder: str, deadline: float | None = None) -> Flow[tuple[bool, bool]]:
        live, mine, *_ = yield from self._state(holder, deadline)
        return int(live) > 0, bool(int(mine))

    def remaining(self, deadline: float | None = None) -> Flow[int | None]:
        live, _, left, *_ = yield from self._state("", deadline)
        return int(left) if int(live) > 0 else None

    def usage(self, deadline: float | None = None) -> Flow[tuple[int, int, str | None]]:
        """(permits in use, permits as stored in Redis or this object's count, the stored configuration)."""
        _, _, _, used, permits, cfg = yield from self._state("", deadline)
        stored = cfg.decode() if isinstance(cfg, bytes) else (cfg or None)
        return int(used), (int(permits) if int(permits) >= 0 else self.limit), stored or None

    def live_holds(self, deadline: float | None = None) -> Flow[int]:
        """How many live holds of this kind there are (permits in use, readers)."""
        live, *_ = yield from self._state("", deadline)
        return int(live)
