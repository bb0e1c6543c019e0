"""Writing one upload into the staging table: validated batches inside ONE open transaction.

Nothing is visible until the whole file has been read and validated, and any failure — a bad line, the size
limit, a client that hung up, the process being killed — rolls every staged row back: nothing to clean up.
Duplicate names are caught by the staging table's unique index on (upload_id, name) — ``ON CONFLICT DO NOTHING``
(PostgreSQL and SQLite alike) and a short row count mean a clash, and only then is the clashing line looked up —
instead of an in-memory set of every name seen: memory stays bounded by the batch, however many templates.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text

from examples.config_upload.store import ConfigStore
from examples.config_upload.templates import BadLineError, parse_line


def _duplicate(line_no: int, name: str, first: int) -> BadLineError:
    return BadLineError(line_no, f"duplicate template name {name!r} (first on line {first})")


class StagingWriter:
    """Blocking calls: the server runs them in a worker thread, one at a time per upload."""

    def __init__(self, store: ConfigStore, upload_id: int) -> None:
        self.store, self.upload_id = store, upload_id
        self.rows = 0
        self._conn = store.engine.connect()
        self._tx = self._conn.begin()
        table, cols = self._conn.dialect.identifier_preparer.quote(store.staging.name), store.staging.c.keys()
        values = ", ".join(f":{c}" for c in cols)  # the same SQL on PostgreSQL and SQLite (>= 3.24):
        self._insert = text(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({values}) ON CONFLICT DO NOTHING")

    def write(self, lines: list[tuple[int, bytes]]) -> None:
        """Validate and stage ``lines``; raise :class:`BadLineError` for the FIRST bad line in file order."""
        rows: dict[str, dict[str, Any]] = {}
        error: BadLineError | None = None
        for line_no, raw in lines:
            if not raw.strip():
                continue  # blank lines are allowed (and still counted for line numbers)
            try:
                t = parse_line(line_no, raw)
                if t.name in rows:
                    raise _duplicate(line_no, t.name, rows[t.name]["line_no"])
            except BadLineError as exc:
                error = exc
                break
            rows[t.name] = {"upload_id": self.upload_id, "line_no": line_no, "name": t.name,
                            "subject": t.subject, "body": t.body}  # fmt: skip
        if rows:
            inserted = self._conn.execute(self._insert, list(rows.values())).rowcount
            self.rows += inserted
            if inserted != len(rows):
                raise self._clash(rows)  # a name staged by an earlier batch: before `error` in the file
        if error is not None:
            raise error

    def _clash(self, rows: dict[str, dict[str, Any]]) -> BadLineError:
        """The first line of this batch whose name an earlier batch staged (the failure path: a lookup is fine)."""
        s = self.store.staging
        first_line = min(row["line_no"] for row in rows.values())
        q = select(s.c.name, s.c.line_no).where(
            s.c.upload_id == self.upload_id, s.c.name.in_(list(rows)), s.c.line_no < first_line
        )
        earlier: dict[str, int] = dict(self._conn.execute(q).all())
        name = min(earlier, key=lambda n: rows[n]["line_no"])
        return _duplicate(rows[name]["line_no"], name, earlier[name])

    def commit(self) -> None:
        try:
            self._tx.commit()
        finally:
            self._conn.close()

    def abort(self) -> None:
        try:
            self._tx.rollback()
        finally:
            self._conn.close()
