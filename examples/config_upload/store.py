"""The SQL side: a staging table that uploads stream into, the live table, and the apply that swaps them.

Uploads write into staging through :class:`~examples.config_upload.staging.StagingWriter` (one transaction
per upload, so a failed upload leaves nothing behind).

:meth:`ConfigStore.apply` replaces the live table from staging in one transaction, guarded by a
:class:`distkit.idempotency.Inbox` row keyed by the staging id: the guard commits with the change, so applying
an id twice (or eight times at once) changes the live table exactly once, with no window between check and write.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from distkit.errors import InvalidArgumentError
from distkit.idempotency import Inbox
from examples.config_upload.templates import canonical_line

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
            Index(None, "upload_id", "name", unique=True),  # the duplicate-name check's lookup (staging.py)
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
