"""SQL idempotency store (PostgreSQL, SQLite): the primary key makes the claim atomic, updates are
compare-and-set on the owner token. Expiry uses this host's clock; expired rows count as absent and
:meth:`SqlIdempotencyStore.purge_expired` deletes them."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import BigInteger, Column, Engine, LargeBinary, MetaData, String, Table, and_, delete, select, update
from sqlalchemy.exc import IntegrityError

from distkit._sql import create_table
from distkit.idempotency.record import BeginResult, Outcome


def records_table(name: str) -> Table:
    return Table(
        name,
        MetaData(),
        Column("key", String(512), primary_key=True),
        Column("state", String(1), nullable=False),
        Column("token", String(64), nullable=True),
        Column("started_at_ms", BigInteger, nullable=False),
        Column("payload_hash", String(64), nullable=False),
        Column("result", LargeBinary, nullable=True),
        Column("expires_at_ms", BigInteger, nullable=False),
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SqlIdempotencyStore:
    """Records in ``table`` (created on first use)."""

    is_async = False

    def __init__(self, engine: Engine, table: str = "distkit_idempotency") -> None:
        self.engine = engine
        self.table = records_table(table)
        create_table(engine, self.table)

    def begin(self, key: str, token: str, payload_hash: str, in_progress_ttl_ms: int, ttl_ms: int) -> BeginResult:
        t = self.table
        for _ in range(5):  # a concurrent insert/delete can race our read; re-evaluate
            now = _now_ms()
            fresh = {
                "state": "P",
                "token": token,
                "started_at_ms": now,
                "payload_hash": payload_hash,
                "result": None,
                "expires_at_ms": now + max(ttl_ms, in_progress_ttl_ms),
            }
            try:
                with self.engine.begin() as conn:
                    conn.execute(t.insert().values(key=key, **fresh))
                return BeginResult(Outcome.CLAIMED)
            except IntegrityError:
                pass
            with self.engine.begin() as conn:
                row = conn.execute(select(t).where(t.c.key == key)).first()
                if row is None:
                    continue
                if row.expires_at_ms <= now:  # expired: take it over if nobody else did meanwhile
                    if self._cas(conn, key, row, fresh):
                        return BeginResult(Outcome.CLAIMED)
                    continue
                if row.state == "C":
                    return BeginResult(Outcome.COMPLETED, payload_hash=row.payload_hash, result=bytes(row.result))
                age = now - row.started_at_ms
                if age >= in_progress_ttl_ms and row.payload_hash == payload_hash:
                    if self._cas(conn, key, row, {"token": token, "started_at_ms": now}):
                        return BeginResult(Outcome.RECLAIMED)
                    continue
                return BeginResult(Outcome.IN_PROGRESS, payload_hash=row.payload_hash, age_ms=age)
        return BeginResult(Outcome.IN_PROGRESS)

    def _cas(self, conn: Any, key: str, row: Any, values: dict[str, Any]) -> bool:
        t = self.table
        token_match = t.c.token.is_(None) if row.token is None else t.c.token == row.token
        res = conn.execute(
            update(t)
            .where(and_(t.c.key == key, t.c.started_at_ms == row.started_at_ms, t.c.state == row.state, token_match))
            .values(**values)
        )
        return bool(res.rowcount == 1)

    def complete(self, key: str, token: str, result: bytes, ttl_ms: int) -> bool:
        t = self.table
        with self.engine.begin() as conn:
            res = conn.execute(
                update(t)
                .where(and_(t.c.key == key, t.c.token == token, t.c.state == "P"))
                .values(state="C", result=result, token=None, expires_at_ms=_now_ms() + ttl_ms)
            )
            return bool(res.rowcount == 1)

    def release(self, key: str, token: str) -> bool:
        t = self.table
        with self.engine.begin() as conn:
            res = conn.execute(delete(t).where(and_(t.c.key == key, t.c.token == token, t.c.state == "P")))
            return bool(res.rowcount == 1)

    def purge_expired(self) -> int:
        """Delete expired records; returns how many."""
        t = self.table
        with self.engine.begin() as conn:
            return int(conn.execute(delete(t).where(t.c.expires_at_ms <= _now_ms())).rowcount)
