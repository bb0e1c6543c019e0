"""The participant's guards (Seata's TCC fence), for services that carry out remote saga steps.

* **empty compensation**: a compensation arrives for an action that never ran here (its command was lost or
  is still in flight) → nothing to undo; it is recorded so that...
* **suspension**: ...an action arriving *after* its compensation is refused (it would never be undone);
* **idempotency**: a repeated command or compensation is recognised and not carried out twice.

Call both inside the participant's own database transaction, with the effect, so effect and fence record
commit together::

    with engine.begin() as conn:
        if fence.action(conn, cmd.saga_id, cmd.step) is FenceDecision.RUN:
            conn.execute(...)            # the effect
"""

from __future__ import annotations

import enum
import time
from typing import Any

from sqlalchemy import BigInteger, Column, Engine, MetaData, String, Table, and_, select
from sqlalchemy.exc import IntegrityError

from distkit._sql import create_table


class FenceDecision(str, enum.Enum):
    RUN = "RUN"  # carry out the effect (action) or undo it (compensation)
    DUPLICATE = "DUPLICATE"  # already done: answer as before, do nothing
    SUSPENDED = "SUSPENDED"  # action after its compensation: refuse (answer failure)
    EMPTY = "EMPTY"  # compensation of an action that never ran: nothing to undo (answer success)


class SqlFence:
    def __init__(self, engine: Engine, table: str = "distkit_saga_fence") -> None:
        self.table = Table(
            table,
            MetaData(),
            Column("saga_id", String(200), primary_key=True),
            Column("step", String(100), primary_key=True),
            Column("state", String(12), nullable=False),  # TRIED | COMPENSATED | SUSPENDED
            Column("updated_ms", BigInteger, nullable=False),
        )
        create_table(engine, self.table)

    def _state(self, conn: Any, saga_id: str, step: str) -> str | None:
        t = self.table
        q = select(t.c.state).where(and_(t.c.saga_id == saga_id, t.c.step == step))
        if conn.dialect.name != "sqlite":
            q = q.with_for_update()
        state = conn.execute(q).scalar_one_or_none()
        return str(state) if state is not None else None

    def _insert(self, conn: Any, saga_id: str, step: str, state: str) -> bool:
        try:
            with conn.begin_nested():
                conn.execute(self.table.insert().values(saga_id=saga_id, step=step, state=state,
                                                        updated_ms=time.time_ns() // 1_000_000))
        except IntegrityError:
            return False
        return True

    def action(self, conn: Any, saga_id: str, step: str) -> FenceDecision:
        """Before an action's effect: RUN, DUPLICATE (ran before) or SUSPENDED (compensated already)."""
        if self._insert(conn, saga_id, step, "TRIED"):
            return FenceDecision.RUN
        state = self._state(conn, saga_id, step)
        return FenceDecision.DUPLICATE if state == "TRIED" else FenceDecision.SUSPENDED

    def compensate(self, conn: Any, saga_id: str, step: str) -> FenceDecision:
        """Before undoing: RUN (the action ran: undo it), EMPTY (it never ran) or DUPLICATE (undone before)."""
        if self._insert(conn, saga_id, step, "SUSPENDED"):
            return FenceDecision.EMPTY
        state = self._state(conn, saga_id, step)
        if state == "TRIED":
            t = self.table
            conn.execute(t.update().where(and_(t.c.saga_id == saga_id, t.c.step == step))
                         .values(state="COMPENSATED", updated_ms=time.time_ns() // 1_000_000))
            return FenceDecision.RUN
        return FenceDecision.DUPLICATE
