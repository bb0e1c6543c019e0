"""The SQL side: a staging table that uploads stream into, the live table, and the apply that swaps them.

An upload writes its rows in batches inside ONE transaction (:class:`StagingWriter`): nothing is visible
until the file has been read and validated to its end, and any failure — a bad line, the size limit, a client
that hung up, the process being killed — rolls every staged row back, so there is nothing to clean up.

:meth:`ConfigStore.apply` replaces the live table from staging in one transaction, guarded by a
:class:`distkit.idempotency.Inbox` row keyed by the staging id: the guard commits with the change, so applying
an id twice (or eight times at once) changes the live table exactly once, with no window between check and write.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Column, Engine, Integer, MetaData, String, Table, Text, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from distkit.errors import InvalidArgumentError
from distkit.idempotency import Inbox
from examples.config_upload.templates import BadLineError, canonical_line, parse_line

APPLY_CONSUMER = "config-apply"


class UnknownUploadError(InvalidArgumentError, LookupError):
    """No staged upload has this id (never uploaded, or its upload failed and was rolled back)."""


@dataclass(frozen=True)
class ApplyResult:
    upload_id: int
    applied: bool  # False: this id was applied before, nothing changed now
    rows: int


class ConfigStore:
    """The three tables of one deployment (names from ``table``, e.g. ``Wiring.table``)."""

    def __init__(self, engine: Engine, table: Callable[[str], str]) -> None:
        self.engine = engine
        md = MetaData()

        def cols() -> tuple[Column[str], ...]:
            return Column("subject", Text, nullable=False), Column("body", Text, nullable=False)

        self.staging = Table(
            table("config_staging"), md,
            Column("upload_id", BigInteger, primary_key=True, autoincrement=False),
            Column("line_no", Integer, primary_key=True, autoincrement=False),
            Column("name", String(200), nullable=False), *cols(),
        )  # fmt: skip
        self.live = Table(
            table("config_templates"), md,
            Column("name", String(200), primary_key=True),
            Column("line_no", Integer, nullable=False), *cols(),
            Column("upload_id", BigInteger, nullable=False),
        )  # fmt: skip
        # One row that every apply updates first: it serialises applies of *different* ids.
        self.version = Table(
            table("config_version"), md,
            Column("slot", Integer, primary_key=True, autoincrement=False),
            Column("upload_id", BigInteger), Column("rows", Integer, nullable=False),
        )  # fmt: skip
        md.create_all(engine)
        try:
            with engine.begin() as conn:
                conn.execute(insert(self.version).values(slot=1, upload_id=None, rows=0))
        except IntegrityError:
            pass  # another instance created it first
        self.inbox = Inbox(engine, table=table("config_applied"))

    def apply(self, upload_id: int) -> ApplyResult:
        """Replace the live templates by staged upload ``upload_id``, once (see the module doc)."""
        s, live = self.staging, self.live
        with (
            self.engine.begin() as conn,
            self.inbox.receive(conn, message_id=str(upload_id), consumer=APPLY_CONSUMER) as fresh,
        ):
            if not fresh:
                return ApplyResult(upload_id, applied=False, rows=0)
            staged = conn.scalar(select(func.count()).select_from(s).where(s.c.upload_id == upload_id)) or 0
            if staged == 0:
                raise UnknownUploadError(f"no staged upload with id {upload_id}")  # rolls the inbox row back
            conn.execute(self.version.update().values(upload_id=upload_id, rows=staged))  # the row lock
            conn.execute(delete(live))
            cols = ["name", "line_no", "subject", "body"]
            source = select(*(s.c[c] for c in cols), s.c.upload_id).where(s.c.upload_id == upload_id)
            conn.execute(insert(live).from_select([*cols, "upload_id"], source))
            conn.execute(delete(s).where(s.c.upload_id == upload_id))
            return ApplyResult(upload_id, applied=True, rows=staged)

    def staged_rows(self, upload_id: int | None = None) -> int:
        q = select(func.count()).select_from(self.staging)
        if upload_id is not None:
            q = q.where(self.staging.c.upload_id == upload_id)
        with self.engine.connect() as conn:
            return conn.scalar(q) or 0

    def live_digest(self) -> tuple[int, str]:
        """(row count, sha256 of the live rows as canonical lines in file order), streamed, not loaded."""
        digest, count = hashlib.sha256(), 0
        q = select(self.live.c.name, self.live.c.subject, self.live.c.body).order_by(self.live.c.line_no)
        with self.engine.connect() as conn:
            for name, subject, body in conn.execution_options(stream_results=True, yield_per=500).execute(q):
                digest.update(canonical_line(name, subject, body))
                count += 1
        return count, digest.hexdigest()


class StagingWriter:
    """One upload's rows, validated and inserted batch by batch inside one open transaction (blocking calls:
    the server runs them in a worker thread, one at a time per upload)."""

    def __init__(self, store: ConfigStore, upload_id: int) -> None:
        self.store, self.upload_id = store, upload_id
        self.rows = 0
        self._first_line: dict[str, int] = {}  # name -> line: duplicates are named at upload, not at apply
        self._conn = store.engine.connect()
        self._tx = self._conn.begin()

    def write(self, lines: list[tuple[int, bytes]]) -> None:
        batch: list[dict[str, Any]] = []
        for line_no, raw in lines:
            if not raw.strip():
                continue  # blank lines are allowed (and still counted for line numbers)
            t = parse_line(line_no, raw)
            if (first := self._first_line.setdefault(t.name, line_no)) != line_no:
                raise BadLineError(line_no, f"duplicate template name {t.name!r} (first on line {first})")
            batch.append({"upload_id": self.upload_id, "line_no": line_no, "name": t.name,
                          "subject": t.subject, "body": t.body})  # fmt: skip
        if batch:
            self._conn.execute(insert(self.store.staging), batch)
            self.rows += len(batch)

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
