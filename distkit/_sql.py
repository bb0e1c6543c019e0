"""Shared SQL plumbing for the SQL-backed modules (idgen leases, outbox, idempotency store)."""

from __future__ import annotations

from sqlalchemy import Engine, Table, inspect
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError


def create_table(engine: Engine, table: Table) -> None:
    """Create ``table`` (and its indexes) if missing; safe when several processes start at once.

    ``CREATE TABLE`` races between processes surface as a duplicate-type/relation error on PostgreSQL (or
    "already exists" on SQLite); the loser re-checks and carries on.
    """
    try:
        table.create(engine, checkfirst=True)
    except (IntegrityError, ProgrammingError, OperationalError):
        if not inspect(engine).has_table(table.name, schema=table.schema):
            raise
