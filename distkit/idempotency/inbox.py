"""Transactional inbox: a processed-messages table written in the same transaction as the business change.

>>> inbox = Inbox(engine)                                                       # doctest: +SKIP
>>> with Session(engine) as session, session.begin():                          # doctest: +SKIP
...     with inbox.receive(session, message_id="evt-1", consumer="stock-service") as fresh:
...         if fresh:
...             session.add(StockReservation(...))

The inbox row is inserted inside a SAVEPOINT of the caller's transaction: a duplicate (the primary key
``(consumer, message_id)`` already exists, or a concurrent delivery holds it) yields ``fresh=False`` without
breaking the transaction; the row commits or rolls back with the business change, so a crash between the
two leaves neither.

SQLite (pysqlite): the driver does not start a transaction before a ``SAVEPOINT``, so the savepoint's
``RELEASE`` would commit the inbox row on its own and a later rollback would keep it (the message is then lost).
``receive`` therefore starts the transaction explicitly (``BEGIN``) when the driver has not, the same thing
SQLAlchemy's pysqlite recipe does for every transaction; the row then commits or rolls back with the business
change as on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, insert
from sqlalchemy.exc import IntegrityError

from distkit import _metrics
from distkit._sql import create_table
from distkit.errors import InvalidArgumentError

# the decorator's counters (declaring a name twice returns the first): an inbox duplicate is a hit, a new one a miss
_HITS = _metrics.counter("distkit.idempotency.hits", "1", "duplicates answered with the stored result (replays)")
_MISSES = _metrics.counter("distkit.idempotency.misses", "1", "first runs: the handler ran under a new claim")


def inbox_table(name: str) -> Table:
    return Table(
        name,
        MetaData(),
        Column("consumer", String(200), primary_key=True),
        Column("message_id", String(512), primary_key=True),
        Column("received_at", DateTime(timezone=True), nullable=False),
    )


def _begin_pysqlite(session: Any) -> None:
    """Make sure a pysqlite connection is inside a real transaction before the SAVEPOINT (see the module doc)."""
    conn = session.connection() if hasattr(session, "get_bind") else session
    if conn.dialect.name != "sqlite" or conn.dialect.driver != "pysqlite":
        return
    dbapi = conn.connection.dbapi_connection
    if dbapi is None or dbapi.in_transaction or dbapi.isolation_level is None:
        return  # already in a transaction, or autocommit / SQLAlchemy's recipe (which begins every transaction)
    if getattr(dbapi, "autocommit", -1) != -1:
        return  # Python 3.12+ autocommit=True/False manages transactions itself (-1: the legacy behaviour)
    conn.exec_driver_sql("BEGIN")


class Inbox:
    """Exactly-once *effects* for a consumer whose state lives in the same SQL database."""

    def __init__(self, engine: Engine, table: str = "distkit_inbox") -> None:
        self.engine = engine
        self.table = inbox_table(table)
        create_table(engine, self.table)

    @contextmanager
    def receive(self, session: Any, *, message_id: str, consumer: str) -> Iterator[bool]:
        """Yield True if this message is new for ``consumer`` (do the work), False for a duplicate.

        ``session`` is an ORM ``Session`` or a ``Connection`` inside the caller's transaction."""
        if not message_id or not consumer:
            raise InvalidArgumentError("inbox.receive needs a message_id and a consumer name")
        _begin_pysqlite(session)
        try:
            with session.begin_nested():
                session.execute(
                    insert(self.table).values(
                        consumer=consumer, message_id=message_id, received_at=dt.datetime.now(dt.timezone.utc)
                    )
                )
            fresh = True
        except IntegrityError:
            fresh = False
        if fresh:
            _MISSES.add(1, {"handler": consumer, "claim": "inbox"})
        else:
            _HITS.add(1, {"handler": consumer, "source": "inbox"})
        yield fresh
