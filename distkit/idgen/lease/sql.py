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


_SENTINEL = -1  # the row that records when this namespace's marks were created (worker_id -1)


class SqlWorkerLease(WorkerLease):
    """Lease a worker id through a table keyed by ``(namespace, worker_id)``.

    Taking a free id is an ``INSERT`` (the primary key makes it atomic); taking an expired one is an
    ``UPDATE … WHERE expires_at_ms <= now`` (a compare-and-set). Expiry uses this host's clock, so hosts
    must agree on time to well within ``ttl_s``. Rows are kept after release: they carry the high-water mark.
    A row with ``worker_id = -1`` records when the namespace's marks were created; while it is younger than one
    ttl (a new namespace, or a table that was dropped or emptied), a new lease waits out the rest of that ttl.
    """

    def __init__(
        self,
        engine: Engine,
        namespace: str = "default",
        max_worker_id: int | None = None,
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

    def _marks_created_ms(self, rows: dict[int, Any], now: int) -> int:
        row = rows.get(_SENTINEL)
        if row is not None:
            return int(row.high_water_ms)
        t = self.table
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(t).values(
                        namespace=self.namespace, worker_id=_SENTINEL, token="", expires_at_ms=0, high_water_ms=now
                    )
                )
            return now
        except IntegrityError:  # another process created it first
            with self.engine.connect() as conn:
                return int(
                    conn.execute(
                        select(t.c.high_water_ms).where(
                            and_(t.c.namespace == self.namespace, t.c.worker_id == _SENTINEL)
                        )
                    ).scalar_one()
                )

    def _try_acquire(self, token: str, max_id: int, deadline: float) -> tuple[int, int, int] | None:
        t, now = self.table, self._now_ms()
        with self.engine.connect() as conn:
            rows = {r.worker_id: r for r in conn.execute(select(t).where(t.c.namespace == self.namespace))}
        wait = min(self.ttl_ms, max(0, self._marks_created_ms(rows, now) + self.ttl_ms - now))
        expires = now + self.ttl_ms + wait
        n = max_id + 1
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
                                    expires_at_ms=expires,
                                    high_water_ms=0,
                                )
                            )
                        return i, 0, wait
                    except IntegrityError:
                        continue  # another process inserted it first
                taken = conn.execute(
                    update(t)
                    .where(and_(t.c.namespace == self.namespace, t.c.worker_id == i, t.c.expires_at_ms <= now))
                    .values(token=token, expires_at_ms=expires)
                ).rowcount
                if taken == 1:
                    mark = conn.execute(
                        select(t.c.high_water_ms).where(and_(t.c.namespace == self.namespace, t.c.worker_id == i))
                    ).scalar_one()
                    return i, int(mark), wait
        return None

    def _update(self, worker_id: int, token: str, values: dict[str, Any]) -> bool:
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
                .values(**values)
            )
            return bool(res.rowcount == 1)

    def _renew(self, worker_id: int, token: str, mark_ms: int, deadline: float) -> bool:
        t = self.table
        raised = case((t.c.high_water_ms > mark_ms, t.c.high_water_ms), else_=mark_ms)
        return self._update(worker_id, token, {"expires_at_ms": self._now_ms() + self.ttl_ms, "high_water_ms": raised})

    def _release(self, worker_id: int, token: str, mark_ms: int | None, deadline: float) -> None:
        values: dict[str, Any] = {"expires_at_ms": 0}
        if mark_ms is not None:
            values["high_water_ms"] = mark_ms  # the holder's exact last timestamp
        self._update(worker_id, token, values)

    def _reset_after_fork(self) -> None:
        self.engine.dispose(close=False)  # never reuse the parent's connections in the child
