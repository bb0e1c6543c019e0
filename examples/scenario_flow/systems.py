"""One system's own table of requests (the UI's or the MD's): the init record, the result, the cancellation.

Every change is a conditional UPDATE on ``status = 'PENDING'``: whichever of "the batch result arrived" and
"the saga gave up and compensated" commits first decides the record, and the other one changes nothing.
The result is applied through the transactional :class:`~distkit.idempotency.Inbox`, so a redelivered event
is recognised in the same transaction that would have updated the row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Engine, MetaData, String, Table, insert, select, update

from distkit.idempotency import Inbox
from distkit.saga import StepContext

PENDING, DONE = "PENDING", "DONE"


class SystemDb:
    """The ``name`` system's request table ``table`` on ``engine`` (created if missing)."""

    def __init__(self, name: str, engine: Engine, table: str, inbox: Inbox, *, cancelled: str) -> None:
        self.name = name
        self.cancelled = cancelled
        self.engine = engine
        self.inbox = inbox
        self.table = Table(
            table,
            MetaData(),
            Column("request_id", String(64), primary_key=True),
            Column("user_email", String(200), nullable=False),
            Column("status", String(16), nullable=False),
            Column("result", String(200), nullable=True),
        )
        self.table.metadata.create_all(engine)

    def create(self, conn: Any, request_id: str, user: str) -> None:
        """The init record, on the caller's connection (the saga's, in :meth:`init_step`)."""
        conn.execute(insert(self.table).values(request_id=request_id, user_email=user, status=PENDING))

    def cancel(self, conn: Any, request_id: str, status: str) -> int:
        """Mark a still-pending record ``status`` (the compensation); 0 if the result got there first."""
        stmt = update(self.table).where(self.table.c.request_id == request_id, self.table.c.status == PENDING)
        return int(conn.execute(stmt.values(status=status)).rowcount)

    def apply_result(self, event_id: str, request_id: str, result: str) -> bool:
        """Store the batch result once per event: True only for the delivery that changed the row."""
        with self.engine.begin() as conn, self.inbox.receive(conn, message_id=event_id, consumer=self.name) as fresh:
            if not fresh:
                return False
            t = self.table
            stmt = update(t).where(t.c.request_id == request_id, t.c.status == PENDING)
            return int(conn.execute(stmt.values(status=DONE, result=result)).rowcount) == 1

    def init_step(self, ctx: StepContext) -> None:
        """The saga's step for this system (a :class:`~distkit.saga.SqlStep`: the record commits with the log)."""
        self.create(ctx.connection, ctx.saga_id, ctx.payload["user"])

    def cancel_step(self, ctx: StepContext) -> int:
        """Its compensation: a pending record becomes ``cancelled`` (an empty compensation changes nothing)."""
        return self.cancel(ctx.connection, ctx.saga_id, self.cancelled)

    def get(self, request_id: str, conn: Any = None) -> dict[str, Any] | None:
        """The record, read on ``conn`` if given (a compensation sees its own transaction's change)."""
        query = select(self.table).where(self.table.c.request_id == request_id)
        if conn is not None:
            row = conn.execute(query).mappings().first()
        else:
            with self.engine.connect() as own:
                row = own.execute(query).mappings().first()
        return dict(row) if row is not None else None
