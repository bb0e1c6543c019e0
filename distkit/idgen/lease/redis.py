"""Worker-id leases in Redis: one ``SET NX PX`` key per worker id, high-water marks in one hash."""

from __future__ import annotations

import random
from typing import Any

from distkit._redis import Script, key
from distkit.idgen.lease.base import OnLost, WorkerLease

_ACQUIRE = Script("idgen", "lease_acquire")
_RENEW = Script("idgen", "lease_renew")


class RedisWorkerLease(WorkerLease):
    """Lease a worker id from ``0..max_worker_id`` in Redis (plain or Cluster: all keys share one slot).

    >>> lease = RedisWorkerLease(redis_client, namespace="orders", max_worker_id=1023, ttl_s=30)  # doctest: +SKIP
    >>> gen = Snowflake.from_lease(lease)                                                         # doctest: +SKIP

    High-water marks live ``mark_ttl_s`` (default 7 days) after the last heartbeat of any worker.
    """

    def __init__(
        self,
        redis_client: Any,
        namespace: str,
        max_worker_id: int = 1023,
        ttl_s: float = 30.0,
        *,
        on_lost: OnLost | None = None,
        mark_ttl_s: float = 7 * 86400,
    ) -> None:
        super().__init__(namespace=namespace, max_worker_id=max_worker_id, ttl_s=ttl_s, on_lost=on_lost)
        self.redis = redis_client
        self._base = key("idgen", namespace)
        self._marks = key("idgen", namespace, "hw")
        self._mark_ttl_ms = int(mark_ttl_s * 1000)

    def _lease_key(self, worker_id: int) -> str:
        return f"{self._base}:w:{worker_id}"

    def _try_acquire(self, token: str) -> tuple[int, int] | None:
        start = random.randrange(self.max_worker_id + 1)  # spread concurrent starters over the id space
        res = _ACQUIRE(self.redis, [self._base], [token, self.ttl_ms, self.max_worker_id, start])
        if res == -1:
            return None
        return int(res[0]), int(res[1])

    def _renew(self, worker_id: int, token: str, high_water_ms: int) -> bool:
        args: list[str | int] = [token, self.ttl_ms, worker_id, high_water_ms, self._mark_ttl_ms, 0]
        return bool(_RENEW(self.redis, [self._lease_key(worker_id), self._marks], args))

    def _release(self, worker_id: int, token: str, high_water_ms: int) -> None:
        args: list[str | int] = [token, self.ttl_ms, worker_id, high_water_ms, self._mark_ttl_ms, 1]
        _RENEW(self.redis, [self._lease_key(worker_id), self._marks], args)
