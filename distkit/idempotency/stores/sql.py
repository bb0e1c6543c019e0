"""SQL idempotency store (PostgreSQL, SQLite): the primary key makes the claim atomic, updates are
compare-and-set on the owner token. Expiry uses this host's clock; expired rows count as absent, and the store
deletes them itself, a bounded batch at most every ``purge_interval_s`` (amortised over ``complete``/``release``
calls; :meth:`SqlIdempotencyStore.purge_expired` deletes all of them at once)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    create_engine,
    delete,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import StaticPool

from distkit._sql import create_table
from distkit.clock import Clock, system_clock
from distkit.errors import IdempotencyKeyError, IdempotencyStoreError
from distkit.idempotency.record import BeginResult, Outcome, short

log = logging.getLogger(__name__)

#: the ``key`` column's length: longer keys are refused up front (:class:`~distkit.errors.IdempotencyKeyError`)
MAX_KEY_LENGTH = 512


def records_table(name: str) -> Table:
    return Table(
        name,
        MetaData(),
        Column("key", String(MAX_KEY_LENGTH), primary_key=True),
        Column("state", String(1), nullable=False),
        Column("token", String(64), nullable=True),
        Column("started_at_ms", BigInteger, nullable=False),
        Column("payload_hash", String(64), nullable=False),
        Column("result", LargeBinary, nullable=True),
        Column("expires_at_ms", BigInteger, nullable=False),
        Index(f"ix_{name}_expires_at_ms", "expires_at_ms"),
    )


def _is_private_memory_sqlite(engine: Engine) -> bool:
    """``sqlite://`` / ``sqlite:///:memory:``: SQLAlchemy's default pool then gives each thread its own database."""
    if engine.dialect.name != "sqlite":
        return False
    db = engine.url.database
    return (not db or db == ":memory:") and not isinstance(engine.pool, StaticPool)


def _is_outage(exc: BaseException) -> bool:
    """A database that cannot be reached or cannot answer now (not a bad statement)."""
    if isinstance(exc, PoolTimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        from sqlalchemy.exc import InterfaceError, OperationalError

        return bool(exc.connection_invalidated) or isinstance(exc, OperationalError | InterfaceError)
    return isinstance(exc, OSError)


_STORES: weakref.WeakSet[SqlIdempotencyStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child must not use the parent's pooled connections (SQLAlchemy's advice: ``dispose(close=False)``)."""
    for store in list(_STORES):
        if store._lock is not None:
            store._lock = threading.Lock()
        if not isinstance(store.engine.pool, StaticPool):  # (one in-memory database: nothing to reconnect to)
            store.engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


class SqlIdempotencyStore:
    """Records in ``table`` (created on first use).

    * Keys are at most 512 characters and contain no NUL character; others are refused before any statement
      with :class:`~distkit.errors.IdempotencyKeyError` (``@idempotent`` checks this before the handler runs).
    * Expired rows are deleted automatically: at most every ``purge_interval_s`` seconds (``None``: never), a
      ``complete`` or ``release`` also deletes up to ``purge_batch`` expired rows.
    * An unreachable database raises :class:`~distkit.errors.IdempotencyStoreError`.
    * Fork-safe: a forked child drops the parent's pooled connections (``engine.dispose(close=False)``) and opens
      its own.
    * ``create_engine("sqlite://")`` (an in-memory database, which SQLAlchemy makes per thread) is replaced by
      one in-memory database on one shared connection, so every thread and ``async def`` handler sees the
      same records; ``store.engine`` is then that engine.
    """

    is_async = False
    requires_utf8 = False
    max_key_length: int | None = MAX_KEY_LENGTH

    def __init__(
        self,
        engine: Engine,
        table: str = "distkit_idempotency",
        *,
        clock: Clock = system_clock,
        purge_interval_s: float | None = 60.0,
        purge_batch: int = 1000,
    ) -> None:
        self._lock: threading.Lock | None = None
        if _is_private_memory_sqlite(engine):
            engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        if engine.dialect.name == "sqlite" and isinstance(engine.pool, StaticPool):
            self._lock = threading.Lock()  # one connection shared by every thread: one transaction at a time
        self.engine = engine
        self.table = records_table(table)
        self.clock = clock
        self.purge_interval_s = purge_interval_s
        self.purge_batch = purge_batch
        self._next_purge = 0.0
        create_table(engine, self.table)
        _STORES.add(self)

    # ------------------------------------------------------------------ plumbing

    def check_key(self, key: str) -> None:
        if len(key) > MAX_KEY_LENGTH:
            raise IdempotencyKeyError(
                f"idempotency key {short(key, 60)} is longer than the SQL store's {MAX_KEY_LENGTH} characters; "
                "use a shorter key (e.g. a hash of the long one) or the Redis store"
            )
        if "\x00" in key:
            raise IdempotencyKeyError(f"idempotency key {short(key, 60)} contains a NUL character")

    @contextlib.contextmanager
    def _tx(self, what: str) -> Iterator[Connection]:
        lock = self._lock if self._lock is not None else contextlib.nullcontext()
        try:
            with lock, self.engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except Exception as exc:
            if _is_outage(exc):
                reason = getattr(exc, "orig", None) or exc
                first_line = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
                raise IdempotencyStoreError(
                    f"SQL idempotency store unavailable during {what}: {type(reason).__name__}: {first_line}"
                ) from exc
            raise

    # ------------------------------------------------------------------ transitions

    def begin(self, key: str, token: str, payload_hash: str, in_progress_ttl_ms: int, ttl_ms: int) -> BeginResult:
        self.check_key(key)
        t = self.table
        record_ttl_ms = max(ttl_ms, in_progress_ttl_ms)
        for _ in range(5):  # a concurrent insert/delete can race our read; re-evaluate
            now = self.clock()
            fresh = {
                "state": "P",
                "token": token,
                "started_at_ms": now,
                "payload_hash": payload_hash,
                "result": None,
                "expires_at_ms": now + record_ttl_ms,
            }
            try:
                with self._tx("begin") as conn:
                    conn.execute(t.insert().values(key=key, **fresh))
                return BeginResult(Outcome.CLAIMED)
            except IntegrityError:
                pass
            with self._tx("begin") as conn:
                row = conn.execute(select(t).where(t.c.key == key)).first()
                if row is None:
                    continue
                if row.expires_at_ms <= now:  # expired: take it over if nobody else did meanwhile
                    if self._cas(conn, key, row, fresh):
                        return BeginResult(Outcome.CLAIMED)
                    continue
                if row.state == "C":
                    return BeginResult(
                        Outcome.COMPLETED,
                        payload_hash=row.payload_hash,
                        result=bytes(row.result),
                        ttl_left_ms=row.expires_at_ms - now,
                    )
                if row.token == token:  # our own claim (a resent begin): same answer as Redis
                    return BeginResult(Outcome.CLAIMED)
                age = now - row.started_at_ms
                if age >= in_progress_ttl_ms and row.payload_hash == payload_hash:
                    # the owner is presumed dead: take over and give the record a full life again (as Redis'
                    # PEXPIRE does), so it cannot expire under the new owner and let a third run in
                    takeover = {"token": token, "started_at_ms": now, "expires_at_ms": now + record_ttl_ms}
                    if self._cas(conn, key, row, takeover):
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
        with self._tx("complete") as conn:
            res = conn.execute(
                update(t)
                .where(and_(t.c.key == key, t.c.token == token, t.c.state == "P"))
                .values(state="C", result=result, token=None, expires_at_ms=self.clock() + ttl_ms)
            )
            done = bool(res.rowcount == 1)
        self._maybe_purge()
        return done

    def release(self, key: str, token: str) -> bool:
        t = self.table
        with self._tx("release") as conn:
            res = conn.execute(delete(t).where(and_(t.c.key == key, t.c.token == token, t.c.state == "P")))
            done = bool(res.rowcount == 1)
        self._maybe_purge()
        return done

    # ------------------------------------------------------------------ expiry

    def _maybe_purge(self) -> None:
        if self.purge_interval_s is None:
            return
        now = time.monotonic()
        if now < self._next_purge:
            return
        self._next_purge = now + self.purge_interval_s
        try:
            self.purge_expired(limit=self.purge_batch)
        except Exception as exc:  # housekeeping never fails the caller's operation
            log.warning("idempotency store: deleting expired records failed (%r); will retry later", exc)

    def purge_expired(self, limit: int | None = None) -> int:
        """Delete expired records (at most ``limit``); returns how many."""
        t = self.table
        now = self.clock()
        expired = t.c.expires_at_ms <= now
        with self._tx("purge") as conn:
            if limit is None:
                return int(conn.execute(delete(t).where(expired)).rowcount)
            batch = select(t.c.key).where(expired).limit(limit)
            # re-checked on the row itself: a record taken over meanwhile has a new expiry and stays
            return int(conn.execute(delete(t).where(and_(expired, t.c.key.in_(batch)))).rowcount)
