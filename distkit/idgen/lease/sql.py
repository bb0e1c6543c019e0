"""Worker-id leases in a SQL table (PostgreSQL, SQLite, any SQLAlchemy dialect): one row per worker id."""

from __future__ import annotations

import random
import time
from typing import Any

from sqlalchemy import BigInteger, Column, Engine, Integer, MetaData, String, Table, and_, case, insert, select, update
from sqlalchemy.exc import IntegrityError

from distkit._sql import create_table
from distkit.idgen.lease.base import OnLost, WorkerLease


def lease_table(name: str) -> Table:
    return Table(
        name,
        MetaData(),
        Column("namespace", String(200), primary_key=True),
        Column("worker_id", Integer, primary_key=True, autoincrement=False),
        Column("token", String(64), nullable=False),
        Column("expires_at_ms", BigInteger, nullable=False),
        Column("high_water_ms", BigInteger, nullable=False),
    )


class SqlWorkerLease(WorkerLease):
    """Lease a worker id through a table keyed by ``(namespace, worker_id)``.

    Taking a free id is an ``INSERT`` (the primary key makes it atomic); taking an expired one is an
    ``UPDATE … WHERE expires_at_ms <= now`` (a compare-and-set). Expiry uses this host's clock, so hosts
    must agree on time to well within ``ttl_s``. Rows are kept after release: they carry the high-water mark.
    """

    def __init__(
        self,
        engine: Engine,
        namespace: str = "default",
        max_worker_id: int = 1023,
        ttl_s: float = 30.0,
        *,
        table: str = "distkit_worker_leases",
        on_lost: OnLost | None = None,
    ) -> None:
        super().__init__(namespace=namespace, max_worker_id=max_worker_id, ttl_s=ttl_s, on_lost=on_lost)
        self.engine = engine
        self.table = lease_table(table)
        create_table(engine, self.table)

    @staticmethod
    def _now_ms() -> int:
        return time.time_ns() // 1_000_000

    def _try_acquire(self, token: str) -> tuple[int, int] | None:
        t, now = self.table, self._now_ms()
        with self.engine.connect() as conn:
            rows = {r.worker_id: r for r in conn.execute(select(t).where(t.c.namespace == self.namespace))}
        n = self.max_worker_id + 1
        start = random.randrange(n)
        for i in ((start + j) % n for j in range(n)):
            row = rows.get(i)
            if row is not None and row.expires_at_ms > now:
                continue
            with self.engine.begin() as conn:
                if row is None:
                    try:
                        with conn.begin_nested():
                            conn.execute(
                                insert(t).values(
                                    namespace=self.namespace,
                                    worker_id=i,
                                    token=token,
                                    expires_at_ms=now + self.ttl_ms,
                                    high_water_ms=0,
                                )
                            )
                        return i, 0
                    except IntegrityError:
                        continue  # another process inserted it first
                taken = conn.execute(
                    update(t)
                    .where(and_(t.c.namespace == self.namespace, t.c.worker_id == i, t.c.expires_at_ms <= now))
                    .values(token=token, expires_at_ms=now + self.ttl_ms)
                ).rowcount
                if taken == 1:
                    mark = conn.execute(
                        select(t.c.high_water_ms).where(and_(t.c.namespace == self.namespace, t.c.worker_id == i))
                    ).scalar_one()
                    return i, int(mark)
        return None

    def _update(self, worker_id: int, token: str, high_water_ms: int, expires_at_ms: int) -> bool:
        t = self.table
        with self.engine.begin() as conn:
            res: Any = conn.execute(
                update(t)
                .where(
                    and_(
                        t.c.namespace == self.namespace,
                        t.c.worker_id == worker_id,
                        t.c.token == token,
                        t.c.expires_at_ms > self._now_ms(),
                    )
                )
                .values(
                    expires_at_ms=expires_at_ms,
                    high_water_ms=case((t.c.high_water_ms > high_water_ms, t.c.high_water_ms), else_=high_water_ms),
                )
            )
            return bool(res.rowcount == 1)

    def _renew(self, worker_id: int, token: str, high_water_ms: int) -> bool:
        return self._update(worker_id, token, high_water_ms, self._now_ms() + self.ttl_ms)

    def _release(self, worker_id: int, token: str, high_water_ms: int) -> None:
        self._update(worker_id, token, high_water_ms, 0)

    def _reset_after_fork(self) -> None:
        self.engine.dispose(close=False)  # never reuse the parent's connections in the child
