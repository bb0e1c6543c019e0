"""The saga log in this process's memory: for tests and the embedded demo (no durability across a crash)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from distkit.errors import SagaOwnershipLostError
from distkit.saga.flows import SagaStatus
from distkit.saga.log.base import SagaRecord
from distkit.saga.remote import Reply


class MemorySagaLog:
    """Same compare-and-set semantics as :class:`~distkit.saga.SqlSagaLog`, in a dict under a lock."""

    def __init__(self) -> None:
        self._rows: dict[str, SagaRecord] = {}
        self._replies: dict[tuple[str, str, str, int], Reply] = {}
        self._lock = threading.Lock()

    def record_reply(self, reply: Reply) -> bool:
        key = (reply.saga_id, reply.step, reply.kind, reply.attempt)
        with self._lock:
            if key in self._replies:
                return False
            self._replies[key] = reply
            return True

    def get_reply(self, saga_id: str, step: str, kind: str, attempt: int) -> Reply | None:
        with self._lock:
            return self._replies.get((saga_id, step, kind, attempt))

    def create(self, record: SagaRecord) -> bool:
        with self._lock:
            if record.saga_id in self._rows:
                return False
            self._rows[record.saga_id] = copy.deepcopy(record)
            return True

    def get(self, saga_id: str) -> SagaRecord | None:
        with self._lock:
            r = self._rows.get(saga_id)
            return copy.deepcopy(r) if r is not None else None

    def claim(self, saga_id: str, owner: str, now_ms: int, lease_ms: int) -> SagaRecord | None:
        with self._lock:
            r = self._rows.get(saga_id)
            if r is None or r.status.terminal:
                return None
            if r.owner not in (None, owner) and r.lease_until_ms >= now_ms:
                return None
            r = r.evolve(owner=owner, lease_until_ms=now_ms + lease_ms, version=r.version + 1)
            self._rows[saga_id] = r
            return copy.deepcopy(r)

    def write(self, record: SagaRecord, *, connection: Any = None) -> SagaRecord:
        with self._lock:
            cur = self._rows.get(record.saga_id)
            if cur is None or cur.version != record.version - 1 or cur.owner != record.owner:
                raise SagaOwnershipLostError(f"saga {record.saga_id!r} changed under coordinator {record.owner}")
            self._rows[record.saga_id] = copy.deepcopy(record)
            return record

    def renew(self, owner: str, saga_ids: Sequence[str], until_ms: int) -> None:
        with self._lock:
            for sid in saga_ids:
                r = self._rows.get(sid)
                if r is not None and r.owner == owner and not r.status.terminal:
                    self._rows[sid] = r.evolve(lease_until_ms=until_ms)

    def expired(self, now_ms: int, limit: int = 1000) -> list[str]:
        with self._lock:
            out = [r for r in self._rows.values() if not r.status.terminal and r.lease_until_ms < now_ms]
        return [r.saga_id for r in sorted(out, key=lambda r: r.created_ms)[:limit]]

    def find(self, status: SagaStatus | None = None, limit: int = 100) -> list[SagaRecord]:
        with self._lock:
            rows = [copy.deepcopy(r) for r in self._rows.values() if status is None or r.status is status]
        return sorted(rows, key=lambda r: r.created_ms)[:limit]

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        yield None
