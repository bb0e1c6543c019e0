"""What each primitive stores in Redis and how its scripts are called: no I/O here.

Two storage shapes:

* **exclusive** (``lock``, ``fair_lock``): one string ``{ns:name}`` = ``"<owner> <hold count> <token>"``
  whose TTL is the lease (Redisson keeps a hash; one string lets the uncontended acquire be a single
  ``SET NX PX`` inside the script, which keeps a cycle as fast as redis-py's non-reentrant ``Lock``). A fair
  lock adds a queue ``{ns:name}:queue`` and its deadlines ``{ns:name}:queue-ttl``.
* **shared** (``rw_lock`` sides, ``semaphore``): a hash ``{ns:name}`` of per-hold counts and tokens plus a
  zset ``{ns:name}:holds`` of per-hold lease ends, so one dead reader (or permit holder) expires on its
  own lease without taking the others with it; ``{ns:name}:writers`` marks waiting writers.

All keys of one object share a hash tag, so every script touches a single Redis Cluster slot.
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
SHARED_ACQUIRE = Script("locks", "shared_acquire")
SHARED_RELEASE = Script("locks", "shared_release")
SHARED_RENEW = Script("locks", "shared_renew")
SHARED_STATE = Script("locks", "shared_state")

# acquire replies other than the token: {status, value}
BUSY, UPGRADE, MISMATCH, GONE = 0, -1, -2, -3
# release replies
FREED, DECREMENTED, ALREADY_DONE, NOT_HELD = 1, 0, 2, -1


def _encoded(*keys: str) -> tuple[bytes, bytes, bytes, bytes]:
    """Keys are sent as bytes: the client then skips encoding them on every call (hot path)."""
    a, b, c, d = (k.encode() for k in keys)
    return a, b, c, d


def parse_pair(reply: Sequence[Any]) -> tuple[int, int]:
    """``{status, value}`` from an acquire script that did not grant the hold."""
    return int(reply[0]), int(reply[1])


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
        object.__setattr__(self, "hold_key", f"{key(self.namespace, self.name)}#{self.kind}")
        object.__setattr__(self, "channel", key(self.namespace, self.name, "ch"))

    def acquire_call(self, holder: str, expected: int, lease_ms: int, enqueue: bool) -> Call:
        raise NotImplementedError

    def release_call(self, holder: str, token: bytes | str, expected: int) -> Call:
        raise NotImplementedError

    def renew_call(self, holder: str, token: bytes | str, lease_ms: int) -> Call:
        raise NotImplementedError

    def leave_call(self, holder: str) -> Call | None:
        """The call that drops a waiter's place in a queue, or None when waiting leaves no trace."""
        return None

    def state(self, holder: str) -> Flow[tuple[bool, bool]]:
        """(is it held by anyone, is it held by ``holder``)."""
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
        keys = _encoded(key(ns, name), key(ns, name, "queue"), key(ns, name, "queue-ttl"), self.channel)
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "_lock_key", keys[:1])
        release_keys = (keys[0], keys[3], keys[1]) if self.waiter_ttl_ms else (keys[0], keys[3])
        object.__setattr__(self, "_release_keys", release_keys)
        if self.waiter_ttl_ms:
            # a live waiter refreshes its place three times per waiter ttl
            object.__setattr__(self, "recheck_cap_s", self.waiter_ttl_ms / 3000)

    def acquire_call(self, holder: str, expected: int, lease_ms: int, enqueue: bool) -> Call:
        if not self.waiter_ttl_ms:  # plain lock: the short form keeps the hot path lean
            return Call(LOCK_ACQUIRE, self._lock_key, (holder, expected, lease_ms))
        return Call(LOCK_ACQUIRE, self.keys, (holder, expected, lease_ms, self.waiter_ttl_ms, 1 if enqueue else 0))

    def release_call(self, holder: str, token: bytes | str, expected: int) -> Call:
        return Call(LOCK_RELEASE, self._release_keys, (holder, token, expected))

    def renew_call(self, holder: str, token: bytes | str, lease_ms: int) -> Call:
        return Call(LOCK_RENEW, self._lock_key, (holder, token, lease_ms))

    def leave_call(self, holder: str) -> Call | None:
        if not self.waiter_ttl_ms:
            return None
        return Call(LEAVE, self.keys[1:], (holder,))

    def state(self, holder: str) -> Flow[tuple[bool, bool]]:
        value = yield Command(("GET", self.keys[0]))
        if isinstance(value, bytes):
            value = value.decode()
        return value is not None, value is not None and value.split(" ", 1)[0] == holder


@dataclass(frozen=True)
class SharedSpec(Spec):
    """One side of a read-write lock (``kind`` ``r`` / ``w``) or a semaphore (``s``, ``limit`` = permits).

    For ``r`` / ``w``, ``limit`` = 1 means *prefer writers*: a waiting writer stops new readers.
    """

    kind: str = "r"
    limit: int = 0
    waiter_ttl_ms: int = 10_000
    keys: tuple[bytes, bytes, bytes, bytes] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        ns, name = self.namespace, self.name
        keys = _encoded(key(ns, name), key(ns, name, "holds"), key(ns, name, "writers"), self.channel)
        object.__setattr__(self, "keys", keys)
        if self.kind == "w":
            object.__setattr__(self, "upgrade_from", f"{key(ns, name)}#r")
            if self.limit == 1:
                object.__setattr__(self, "recheck_cap_s", self.waiter_ttl_ms / 3000)

    def acquire_call(self, holder: str, expected: int, lease_ms: int, enqueue: bool) -> Call:
        limit = self.limit if enqueue or self.kind != "w" else 0  # a try-lock does not make readers wait
        return Call(SHARED_ACQUIRE, self.keys, (self.kind, holder, expected, lease_ms, limit, self.waiter_ttl_ms))

    def release_call(self, holder: str, token: bytes | str, expected: int) -> Call:
        return Call(SHARED_RELEASE, (self.keys[0], self.keys[1], self.keys[3]), (self.kind, holder, token, expected))

    def renew_call(self, holder: str, token: bytes | str, lease_ms: int) -> Call:
        return Call(SHARED_RENEW, self.keys[:2], (self.kind, holder, token, lease_ms))

    def leave_call(self, holder: str) -> Call | None:
        if self.kind != "w" or self.limit != 1:
            return None
        return Call(LEAVE, (key(self.namespace, self.name, "none"), self.keys[2], self.keys[3]), (holder,))

    def state(self, holder: str) -> Flow[tuple[bool, bool]]:
        live, mine = yield Call(SHARED_STATE, self.keys[1:2], (self.kind, holder))
        return int(live) > 0, bool(int(mine))

    def live_holds(self) -> Flow[int]:
        """How many live holds of this kind there are (permits in use, readers)."""
        live, _ = yield Call(SHARED_STATE, self.keys[1:2], (self.kind, ""))
        return int(live)
