"""The saga log in a SQL database (PostgreSQL in production, SQLite for the demo): one row per saga, its steps
as a JSON column, so each state change is one compare-and-set ``UPDATE`` on ``version``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import BigInteger, Column, Engine, Index, Integer, MetaData, String, Table, Text, and_, or_, select
from sqlalchemy.exc import IntegrityError

from distkit._sql import create_table
from distkit.errors import SagaOwnershipLostError
from distkit.saga.flows import SagaStatus
from distkit.saga.log.base import SagaRecord, dumps
from distkit.saga.remote import Reply

_OPEN = (SagaStatus.RUNNING.value, SagaStatus.COMPENSATING.value)


def sagas_table(name: str) -> Table:
    t = Table(
        name,
        MetaData(),
        Column("saga_id", String(200), primary_key=True),
        Column("name", String(100), nullable=False),
        Column("status", String(16), nullable=False),
        Column("payload", Text, nullable=False),
        Column("steps", Text, nullable=False),
        Column("owner", String(64), nullable=True),
        Column("lease_until_ms", BigInteger, nullable=False),
        Column("version", Integer, nullable=False),
        Column("error", Text, nullable=True),
        Column("created_ms", BigInteger, nullable=False),
        Column("updated_ms", BigInteger, nullable=False),
        Column("extra", Text, nullable=False, default="{}"),
    )
    Index(f"{name}_status_lease", t.c.status, t.c.lease_until_ms)
    return t


def replies_table(name: str) -> Table:
    return Table(
        name,
        MetaData(),
        Column("saga_id", String(200), primary_key=True),
        Column("step", String(100), primary_key=True),
        Column("kind", String(16), primary_key=True),
        Column("attempt", Integer, primary_key=True),
        Column("ok", Integer, nullable=False),
        Column("result", Text, nullable=True),
        Column("error", Text, nullable=True),
        Column("received_ms", BigInteger, nullable=False),
    )


class SqlSagaLog:
    """Sagas in ``table`` and remote-step replies in ``<table>_replies`` (created on first use, race-safe)."""

    def __init__(self, engine: Engine, table: str = "distkit_sagas") -> None:
        self.engine = engine
        self.table = sagas_table(table)
        self.replies = replies_table(f"{table}_replies")
        create_table(engine, self.table)
        create_table(engine, self.replies)

    def record_reply(self, reply: Reply) -> bool:
        """Store a reply; ``False`` for a duplicate (the first one counts)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(self.replies.insert().values(
                    saga_id=reply.saga_id, step=reply.step, kind=reply.kind, attempt=reply.attempt,
                    ok=int(reply.ok), result=dumps(reply.result), error=reply.error,
                    received_ms=time.time_ns() // 1_000_000))
        except IntegrityError:
            return False
        return True

    def get_reply(self, saga_id: str, step: str, kind: str, attempt: int) -> Reply | None:
        r = self.replies.c
        with self.engine.connect() as conn:
            row = conn.execute(select(self.replies).where(and_(
                r.saga_id == saga_id, r.step == step, r.kind == kind, r.attempt == attempt))).first()
        if row is None:
            return None
        return Reply(row.saga_id, row.step, row.kind, int(row.attempt), bool(row.ok),
                     json.loads(row.result) if row.result is not None else None, row.error)

    def __repr__(self) -> str:
        return f"SqlSagaLog({self.engine.url.render_as_string(hide_password=True)!r}, table={self.table.name!r})"

    @staticmethod
    def _row(record: SagaRecord) -> dict[str, Any]:
        return {
            "name": record.name,
            "status": record.status.value,
            "payload": dumps(record.payload),
            "steps": dumps(record.steps),
            "owner": record.owner,
            "lease_until_ms": record.lease_until_ms,
            "version": record.version,
            "error": record.error,
            "created_ms": record.created_ms,
            "updated_ms": record.updated_ms,
            "extra": dumps(record.extra),
        }

    @staticmethod
    def _record(row: Any) -> SagaRecord:
        return SagaRecord(
            saga_id=row.saga_id,
            name=row.name,
            status=SagaStatus(row.status),
            payload=json.loads(row.payload),
            steps=json.loads(row.steps),
            owner=row.owner,
            lease_until_ms=int(row.lease_until_ms),
            version=int(row.version),
            error=row.error,
            created_ms=int(row.created_ms),
            updated_ms=int(row.updated_ms),
            extra=json.loads(row.extra or "{}"),
        )

    def create(self, record: SagaRecord) -> bool:
        try:
            with self.engine.begin() as conn:
                conn.execute(self.table.insert().values(saga_id=record.saga_id, **self._row(record)))
        except IntegrityError:
            return False
        return True

    def get(self, saga_id: str) -> SagaRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(self.table).where(self.table.c.saga_id == saga_id)).first()
        return self._record(row) if row is not None else None

    def claim(self, saga_id: str, owner: str, now_ms: int, lease_ms: int) -> SagaRecord | None:
        t = self.table
        with self.engine.begin() as conn:
            res = conn.execute(
                t.update()
                .where(
                    and_(
                        t.c.saga_id == saga_id,
                        t.c.status.in_(_OPEN),
                        or_(t.c.owner.is_(None), t.c.owner == owner, t.c.lease_until_ms < now_ms),
                    )
                )
                .values(owner=owner, lease_until_ms=now_ms + lease_ms, version=t.c.version + 1)
            )
            if res.rowcount != 1:
                return None
            row = conn.execute(select(t).where(t.c.saga_id == saga_id)).first()
        return self._record(row)

    def write(self, record: SagaRecord, *, connection: Any = None) -> SagaRecord:
        t = self.table
        stmt = (
            t.update()
            .where(and_(t.c.saga_id == record.saga_id, t.c.version == record.version - 1, t.c.owner == record.owner))
            .values(**self._row(record))
        )
        if connection is not None:
            res = connection.execute(stmt)
        else:
            with self.engine.begin() as conn:
                res = conn.execute(stmt)
        if res.rowcount != 1:
            raise SagaOwnershipLostError(
                f"saga {record.saga_id!r} changed under coordinator {record.owner}: another coordinator took it over "
                "(lease ran out); this one stops driving it"
            )
        return record

    def renew(self, owner: str, saga_ids: Sequence[str], until_ms: int) -> None:
        if not saga_ids:
            return
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(
                t.update()
                .where(and_(t.c.owner == owner, t.c.saga_id.in_(list(saga_ids)), t.c.status.in_(_OPEN)))
                .values(lease_until_ms=until_ms)
            )

    def expired(self, now_ms: int, limit: int = 1000) -> list[str]:
        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.c.saga_id)
                .where(and_(t.c.status.in_(_OPEN), t.c.lease_until_ms < now_ms))
                .order_by(t.c.created_ms)
                .limit(limit)
            ).all()
        return [r.saga_id for r in rows]

    def find(self, status: SagaStatus | None = None, limit: int = 100) -> list[SagaRecord]:
        t = self.table
        q = select(t).order_by(t.c.created_ms).limit(limit)
        if status is not None:
            q = q.where(t.c.status == status.value)
        with self.engine.connect() as conn:
            return [self._record(r) for r in conn.execute(q).all()]

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.engine.begin() as conn:
            yield conn
