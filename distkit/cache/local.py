"""The L1: a bounded, thread-safe, in-process LRU whose entries also expire after ``local_ttl_s``."""

from __future__ import annotations

import threading
from collections import OrderedDict

from distkit.cache.entry import Entry


class LocalCache:
    """LRU of at most ``max_entries`` :class:`Entry` objects; each one is dropped ``local_ttl_ms`` after it was
    put (and at the entry's own end of life), so a process that missed an invalidation is wrong for at most
    ``local_ttl_s``. ``local_ttl_ms=0`` or ``max_entries=0`` disables the L1."""

    __slots__ = ("_data", "_lock", "local_ttl_ms", "max_entries", "version")

    def __init__(self, max_entries: int, local_ttl_ms: int) -> None:
        self.max_entries = max_entries
        self.local_ttl_ms = local_ttl_ms
        self._data: OrderedDict[str, tuple[Entry, int]] = OrderedDict()
        self._lock = threading.Lock()
        # bumped by every invalidation (pop, clear, a writer's replace): a reader that read Redis before an
        # invalidation must not put what it read into the L1 after it (put(..., if_version=...))
        self.version = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.local_ttl_ms > 0

    def get(self, key: str, now_ms: int) -> Entry | None:
        item = self._data.get(key)  # dict reads are atomic under the GIL: the hit path takes no lock
        if item is None:
            return None
        entry, until = item
        if now_ms >= until:
            self.pop(key, item)
            return None
        try:
            self._data.move_to_end(key)
        except KeyError:  # dropped by another thread in between: still a valid read of what was there
            pass
        return entry

    def put(self, key: str, entry: Entry, now_ms: int, if_version: int | None = None, *, bump: bool = False) -> bool:
        """Store ``entry``; with ``if_version``, only if no invalidation happened since that version was read.
        ``bump`` (a writer's own new value) counts as an invalidation for concurrent readers."""
        if not self.enabled:
            return False
        until = min(now_ms + self.local_ttl_ms, entry.stale_until_ms)
        with self._lock:
            if if_version is not None and if_version != self.version:
                return False
            if bump:
                self.version += 1
            self._data[key] = (entry, until)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
        return True

    def pop(self, key: str, only: tuple[Entry, int] | None = None) -> None:
        with self._lock:
            if only is None:
                self.version += 1
                self._data.pop(key, None)
            elif self._data.get(key) is only:  # an expired item: not an invalidation
                self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self.version += 1
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
