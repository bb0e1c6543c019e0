"""A bounded, TTL'd in-process cache of completed records (Powertools' ``use_local_cache``).

A duplicate found here is answered without a store round trip. Entries hold the stored bytes (decoded on every
hit, so a caller that mutates its result never changes what the next duplicate gets) and live at most ``ttl_s``
and never past the record's own expiry in the store. The cache is per process and thread-safe.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict
from typing import NamedTuple

from distkit.errors import InvalidArgumentError


class CachedRecord(NamedTuple):
    payload_hash: str
    result: bytes
    expires_at: float  # time.monotonic()


_CACHES: weakref.WeakSet[LocalCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_CACHES):
        cache._lock = threading.Lock()  # a lock held by a parent thread at fork time would never be released


os.register_at_fork(after_in_child=_after_fork_in_child)


class LocalCache:
    """``LocalCache(max_items=256, ttl_s=300)``: least recently used entries go first when full."""

    def __init__(self, max_items: int = 256, ttl_s: float = 300.0) -> None:
        if max_items < 1 or ttl_s <= 0:
            raise InvalidArgumentError("LocalCache needs max_items >= 1 and ttl_s > 0")
        self.max_items = max_items
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, CachedRecord] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        _CACHES.add(self)

    def get(self, key: str) -> CachedRecord | None:
        now = time.monotonic()
        with self._lock:
            rec = self._items.get(key)
            if rec is None or rec.expires_at <= now:
                if rec is not None:
                    del self._items[key]
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return rec

    def put(self, key: str, payload_hash: str, result: bytes, record_ttl_ms: int = -1) -> None:
        """Keep a completed record for at most ``ttl_s`` and at most ``record_ttl_ms`` (its life in the store)."""
        life = self.ttl_s if record_ttl_ms < 0 else min(self.ttl_s, record_ttl_ms / 1000)
        if life <= 0:
            return
        with self._lock:
            self._items[key] = CachedRecord(payload_hash, result, time.monotonic() + life)
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def discard(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
