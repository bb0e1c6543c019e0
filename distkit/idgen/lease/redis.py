"""Worker-id leases in Redis: one ``SET NX PX`` key per worker id, high-water marks in one hash.

Every call goes through :class:`distkit._redis.Runner` with a deadline: acquire and release one ttl (at most
5 s) from now, renewals the lease's known-valid deadline. Keys share one hash tag, so plain Redis and Redis
Cluster behave the same; clients with ``decode_responses=True`` work too.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from distkit._redis import Runner, Script, key
from distkit.idgen.lease.base import OnLost, WorkerLease

if TYPE_CHECKING:
    from distkit._types import SyncRedisLike

_ACQUIRE = Script("idgen", "lease_acquire")
_RENEW = Script("idgen", "lease_renew")


class RedisWorkerLease(WorkerLease):
    """Lease a worker id in Redis (plain or Cluster: all keys share one slot).

    >>> lease = RedisWorkerLease(redis_client, namespace="orders", ttl_s=30)  # doctest: +SKIP
    >>> gen = Snowflake.from_lease(lease)                                    # doctest: +SKIP

    ``max_worker_id`` defaults to what the generator's layout can hold (see ``from_lease``). High-water marks
    live ``mark_ttl_s`` (default 7 days) after the last renewal of any worker of the namespace; a namespace idle
    for longer starts like a new one (its first lease waits one ttl).
    """

    def __init__(
        self,
        redis_client: SyncRedisLike,
        namespace: str,
        max_worker_id: int | None = None,
        ttl_s: float = 30.0,
        *,
        on_lost: OnLost | None = None,
        mark_ttl_s: float = 7 * 86400,
    ) -> None:
        super().__init__(namespace=namespace, max_worker_id=max_worker_id, ttl_s=ttl_s, on_lost=on_lost)
        self.redis = redis_client
        self._runner = Runner(redis_client)
        self._base = key("idgen", namespace)
        self._marks = key("idgen", namespace, "hw")
        self._mark_ttl_ms = max(int(mark_ttl_s * 1000), 2 * self.ttl_ms)

    def _lease_key(self, worker_id: int) -> str:
        return f"{self._base}:w:{worker_id}"

    def _try_acquire(self, token: str, max_id: int, deadline: float) -> tuple[int, int, int] | None:
        start = random.randrange(max_id + 1)  # spread concurrent starters over the id space
        keys = [self._marks, *(self._lease_key(i) for i in range(max_id + 1))]
        res = self._runner(_ACQUIRE, keys, [token, self.ttl_ms, start, self._mark_ttl_ms], deadline=deadline)
        if not isinstance(res, list):
            return None
        return int(res[0]), int(res[1]), int(res[2])

    def _call(self, worker_id: int, token: str, mark_ms: int, mode: int, deadline: float) -> bool:
        args: list[str | int] = [token, self.ttl_ms, worker_id, mark_ms, self._mark_ttl_ms, mode]
        return bool(int(self._runner(_RENEW, [self._lease_key(worker_id), self._marks], args, deadline=deadline)))

    def _renew(self, worker_id: int, token: str, mark_ms: int, deadline: float) -> bool:
        return self._call(worker_id, token, mark_ms, 0, deadline)

    def _release(self, worker_id: int, token: str, mark_ms: int | None, deadline: float) -> None:
        self._call(worker_id, token, 0 if mark_ms is None else mark_ms, 2 if mark_ms is None else 1, deadline)
