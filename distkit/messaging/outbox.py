"""Transactional outbox: events written in the business transaction, relayed to the broker afterwards.

The event row commits or rolls back with the business change (no dual write). :class:`OutboxRelay` reads
unsent rows in insertion order, publishes them with an idempotent producer (key = aggregate id, header
``event-id``) and marks them sent. A relay that dies after publishing but before marking republishes
the same events with the same ``event-id`` on restart: delivery is at-least-once, and consumers dedupe on
``event-id`` (``distkit.idempotency``). Relays lock the rows they read (``SELECT … FOR UPDATE``), so
several relay processes never publish one key's events out of order.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from distkit._sql import create_table
from distkit.errors import InvalidArgumentError, MessagingError
from distkit.messaging.broker import Broker, Producer
from distkit.messaging.message import Codec, JsonCodec, encode_headers, encode_key

log = logging.getLogger(__name__)

EVENT_ID_HEADER = "event-id"


def outbox_table(name: str, metadata: MetaData | None = None) -> Table:
    """The outbox table definition (PostgreSQL, SQLite, any SQLAlchemy dialect)."""
    md = metadata or MetaData()
    return Table(
        name,
        md,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("topic", String(249), nullable=False),
        Column("message_key", LargeBinary, nullable=True),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("sent_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
        Column("last_error", Text, nullable=True),
        Index(f"ix_{name}_unsent", "sent_at", "id"),
    )


class Outbox:
    """Where services write events inside their own database transaction.

    >>> outbox = Outbox(engine)                                            # doctest: +SKIP
    >>> with Session(engine) as session, session.begin():                 # doctest: +SKIP
    ...     session.add(Order(id=42))
    ...     outbox.add(session, topic="orders", key="42", value={"order_id": 42, "status": "created"})
    """

    def __init__(
        self, engine: Engine, table: str = "distkit_outbox", *, codec: Codec | None = None, create: bool = True
    ) -> None:
        self.engine = engine
        self.codec: Codec = codec or JsonCodec()
        self.table = outbox_table(table)
        if create:
            self.create_table()

    def create_table(self) -> None:
        """Create the table and its index if they do not exist."""
        create_table(self.engine, self.table)

    def add(
        self,
        session: Any,
        *,
        topic: str,
        value: Any,
        key: bytes | str | int | None = None,
        headers: Mapping[str, str | bytes] | None = None,
        event_id: str | None = None,
    ) -> str:
        """Insert one event through ``session`` (an ORM ``Session`` or a ``Connection``) in the caller's
        transaction; returns its ``event-id``. The value is encoded now, so a bad value fails the business
        transaction rather than the relay."""
        if not topic:
            raise InvalidArgumentError("outbox.add needs a topic")
        payload = self.codec.encode(value)
        encoded_headers = {
            k: v.decode("latin-1") if isinstance(v, bytes) else v for k, v in encode_and_check(headers).items()
        }
        event_id = event_id or str(uuid.uuid4())
        session.execute(
            insert(self.table).values(
                event_id=event_id,
                topic=topic,
                message_key=encode_key(key),
                payload=payload,
                headers=json.dumps(encoded_headers),
                created_at=dt.datetime.now(dt.timezone.utc),
                attempts=0,
            )
        )
        return event_id

    def pending(self) -> int:
        """How many events are not yet marked sent."""
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(self.table).where(self.table.c.sent_at.is_(None))
                ).scalar_one()
            )


def encode_and_check(headers: Mapping[str, str | bytes] | None) -> dict[str, str | bytes]:
    encode_headers(dict(headers or {}))  # type check: raises SerializationError on bad values
    if headers and EVENT_ID_HEADER in headers:
        raise InvalidArgumentError(f"the {EVENT_ID_HEADER!r} header is set by the outbox; pass event_id= instead")
    return dict(headers or {})


class OutboxRelay:
    """Publishes unsent outbox rows in order and marks them sent (see module docs)."""

    def __init__(
        self,
        outbox: Outbox,
        broker: Broker,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 0.5,
        max_backoff_s: float = 30.0,
        flush_timeout_s: float = 30.0,
    ) -> None:
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
        self.outbox = outbox
        self.broker = broker
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.max_backoff_s = max_backoff_s
        self.flush_timeout_s = flush_timeout_s
        self._producer: Producer | None = None
        self._stop = threading.Event()

    def _get_producer(self) -> Producer:
        if self._producer is None:
            self._producer = self.broker.producer()
        return self._producer

    def run_once(self) -> int:
        """Publish one batch of unsent events; returns how many were published and marked sent.

        On a publish failure the rows stay unsent (their ``attempts``/``last_error`` are updated) and the
        error is raised.
        """
        t = self.outbox.table
        with self.outbox.engine.connect() as conn, conn.begin():
            rows = conn.execute(
                select(t).where(t.c.sent_at.is_(None)).order_by(t.c.id).limit(self.batch_size).with_for_update()
            ).all()
            if not rows:
                return 0
            try:
                self._publish(rows)
            except MessagingError as exc:
                conn.execute(
                    update(t)
                    .where(t.c.id.in_([r.id for r in rows]))
                    .values(attempts=t.c.attempts + 1, last_error=str(exc)[:2000])
                )
                error = exc
            else:
                self._mark_sent(conn, [r.id for r in rows])
                return len(rows)
        raise error

    def _publish(self, rows: Sequence[Any]) -> None:
        producer = self._get_producer()
        for r in rows:
            headers: dict[str, str | bytes] = {k: v.encode("latin-1") for k, v in json.loads(r.headers).items()}
            headers[EVENT_ID_HEADER] = r.event_id
            producer.send(r.topic, bytes(r.payload), key=r.message_key, headers=headers)
        producer.flush(self.flush_timeout_s)

    def _mark_sent(self, conn: Any, ids: list[int]) -> None:
        t = self.outbox.table
        conn.execute(update(t).where(t.c.id.in_(ids)).values(sent_at=dt.datetime.now(dt.timezone.utc)))

    def stop(self) -> None:
        self._stop.set()

    def run_forever(self, stop_event: threading.Event | None = None) -> None:
        """Relay until :meth:`stop` / ``stop_event``; failures back off exponentially up to ``max_backoff_s``."""
        backoff = self.poll_interval_s
        while not self._stop.is_set() and not (stop_event is not None and stop_event.is_set()):
            try:
                published = self.run_once()
            except MessagingError as exc:
                log.warning("outbox relay: publish failed (%s); retrying in %.1fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(self.max_backoff_s, backoff * 2)
                continue
            backoff = self.poll_interval_s
            if published < self.batch_size:
                self._stop.wait(self.poll_interval_s)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        time.sleep(0)
