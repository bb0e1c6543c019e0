"""Transactional outbox: events written in the business transaction, relayed to the broker afterwards.

The event row commits or rolls back with the business change (no dual write). :class:`OutboxRelay` reads
unsent rows in insertion order, publishes them with an idempotent producer (key = aggregate id, header
``event-id``) and marks them sent. A relay that dies after publishing but before marking republishes
the same events with the same ``event-id`` on restart: delivery is at-least-once, and consumers dedupe on
``event-id`` (``distkit.idempotency``). Relays lock the rows they read (``SELECT … FOR UPDATE``), so
several relay processes never publish one key's events out of order.

Headers are stored as typed JSON (text as text, bytes as base64) and sent as UTF-8 / the original bytes.
``add`` validates everything the broker would refuse (topic name, header types and text, record size), so
a bad event fails the business transaction. A row that still cannot be published (written by other code,
or refused by the broker) is a *poison row*: its ``attempts``/``last_error`` are updated, later rows of the
same topic and key wait behind it, every other row keeps flowing, and after ``max_attempts`` row-specific
failures it is moved to the ``<table>_dead`` table (counted in :attr:`OutboxRelay.stats`). Broker outages
never dead-letter anything: the relay raises and ``run_forever`` backs off.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    delete,
    insert,
    select,
    update,
)

from distkit import _metrics
from distkit._sql import create_table
from distkit.errors import (
    BrokerUnavailableError,
    InvalidArgumentError,
    MessageTooLargeError,
    MessagingError,
    SerializationError,
)
from distkit.messaging._tracing import with_trace_headers
from distkit.messaging.broker import Broker, Producer, RawRecord
from distkit.messaging.message import Codec, JsonCodec, check_topic_name, encode_headers, encode_key

log = logging.getLogger(__name__)

EVENT_ID_HEADER = "event-id"


_PUBLISHED = _metrics.counter("distkit.messaging.outbox.published", "1", "outbox rows published and marked sent")
_DEAD = _metrics.counter("distkit.messaging.outbox.dead_lettered", "1", "outbox rows moved to the dead-letter table")
_OUTAGES = _metrics.counter("distkit.messaging.outbox.outages", "1", "relay batches stopped by an unavailable broker")


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


def dead_table(name: str, metadata: MetaData | None = None) -> Table:
    """Where poison rows go: the outbox row as it was, plus when it was parked."""
    md = metadata or MetaData()
    return Table(
        name,
        md,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
        Column("event_id", String(64), nullable=False),
        Column("topic", Text, nullable=False),
        Column("message_key", LargeBinary, nullable=True),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("dead_at", DateTime(timezone=True), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("last_error", Text, nullable=True),
    )


def dump_headers(headers: Mapping[str, str | bytes]) -> str:
    """Typed JSON: ``[[name, "s", text] | [name, "b", base64], ...]`` (bytes stay bytes, text stays text)."""
    out: list[list[str]] = []
    for name, value in headers.items():
        if isinstance(value, bytes):
            out.append([name, "b", base64.b64encode(value).decode("ascii")])
        else:
            out.append([name, "s", value])
    return json.dumps(out, ensure_ascii=False)


def load_headers(text: str) -> dict[str, str | bytes]:
    """:func:`dump_headers` back; a row of the old ``{name: text}`` format has text values (sent as UTF-8)."""
    raw = json.loads(text)
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    out: dict[str, str | bytes] = {}
    for name, kind, value in raw:
        out[name] = base64.b64decode(value, validate=True) if kind == "b" else value
    return out


@dataclass
class RelayStats:
    """What an :class:`OutboxRelay` did since it was created."""

    published: int = 0
    failed_attempts: int = 0  # row-specific publish failures (each counts one attempt on its row)
    dead_lettered: int = 0  # rows moved to the dead-letter table
    outages: int = 0  # batches that failed because the broker was unavailable


class Outbox:
    """Where services write events inside their own database transaction.

    >>> outbox = Outbox(engine)                                            # doctest: +SKIP
    >>> with Session(engine) as session, session.begin():                 # doctest: +SKIP
    ...     session.add(Order(id=42))
    ...     outbox.add(session, topic="orders", key="42", value={"order_id": 42, "status": "created"})
    """

    def __init__(
        self,
        engine: Engine,
        table: str = "distkit_outbox",
        *,
        codec: Codec | None = None,
        create: bool = True,
        max_message_bytes: int = 1_000_000,
    ) -> None:
        self.engine = engine
        self.codec: Codec = codec or JsonCodec()
        self.max_message_bytes = max_message_bytes  # librdkafka's message.max.bytes default
        self.table = outbox_table(table)
        self.dead = dead_table(f"{table}_dead")
        if create:
            self.create_table()

    def create_table(self) -> None:
        """Create the outbox table, its index and the dead-letter table if they do not exist."""
        create_table(self.engine, self.table)
        create_table(self.engine, self.dead)

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
        check_topic_name(topic)
        payload = self.codec.encode(value)
        checked = encode_and_check(with_trace_headers(headers))  # the business request's trace rides along
        message_key = encode_key(key)
        event_id = event_id or str(uuid.uuid4())
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 64:
            raise InvalidArgumentError(f"event_id must be a string of 1-64 characters, got {event_id!r}")
        size = len(payload) + len(message_key or b"") + len(event_id) + sum(len(n) + len(v) for n, v in wire(checked))
        if size > self.max_message_bytes:
            raise MessageTooLargeError(
                f"outbox event of {size} bytes is over max_message_bytes={self.max_message_bytes}; "
                "store the payload elsewhere and send a reference"
            )
        session.execute(
            insert(self.table).values(
                event_id=event_id,
                topic=topic,
                message_key=message_key,
                payload=payload,
                headers=dump_headers(checked),
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


def wire(headers: Mapping[str, str | bytes]) -> list[tuple[str, bytes]]:
    return encode_headers(headers)


def encode_and_check(headers: Mapping[str, str | bytes] | None) -> dict[str, str | bytes]:
    """Headers as given (``str`` or ``bytes`` values, valid UTF-8 text); raises ``SerializationError``."""
    checked = {k: bytes(v) if isinstance(v, bytearray | memoryview) else v for k, v in (headers or {}).items()}
    encode_headers(checked)  # names non-empty str, values str (encodable as UTF-8) or bytes
    if EVENT_ID_HEADER in checked:
        raise InvalidArgumentError(f"the {EVENT_ID_HEADER!r} header is set by the outbox; pass event_id= instead")
    return checked


class OutboxRelay:
    """Publishes unsent outbox rows in order and marks them sent (see module docs).

    ``max_attempts``: row-specific failures (invalid topic, record too large, unknown topic, undecodable
    headers ...) before the row moves to the dead-letter table; broker outages do not count towards it.
    """

    def __init__(
        self,
        outbox: Outbox,
        broker: Broker,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 0.5,
        max_backoff_s: float = 30.0,
        flush_timeout_s: float = 30.0,
        max_attempts: int = 5,
    ) -> None:
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
        if max_attempts < 1:
            raise InvalidArgumentError(f"max_attempts must be >= 1, got {max_attempts}")
        self.outbox = outbox
        self.broker = broker
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.max_backoff_s = max_backoff_s
        self.flush_timeout_s = flush_timeout_s
        self.max_attempts = max_attempts
        self.stats = RelayStats()
        self._attrs = {"table": outbox.table.name}
        self._producer: Producer | None = None
        self._stop = threading.Event()

    def _get_producer(self) -> Producer:
        if self._producer is None:
            self._producer = self.broker.producer()
        return self._producer

    def run_once(self) -> int:
        """Publish one batch of unsent events; returns how many were published and marked sent.

        Rows that fail on their own are recorded (``attempts``, ``last_error``) or dead-lettered, and the
        others are still published and marked. If the broker is unavailable, the failed rows are recorded
        and :class:`~distkit.errors.BrokerUnavailableError` is raised.
        """
        t = self.outbox.table
        with self.outbox.engine.connect() as conn, conn.begin():
            rows = conn.execute(
                select(t).where(t.c.sent_at.is_(None)).order_by(t.c.id).limit(self.batch_size).with_for_update()
            ).all()
            if not rows:
                return 0
            sendable, errors = self._prepare(rows)
            outage: BrokerUnavailableError | None = None
            try:
                results = self._get_producer().publish_raw([rec for _row, rec in sendable], self.flush_timeout_s)
            except BrokerUnavailableError as exc:  # nothing acknowledged for sure: all of them stay unsent
                outage = exc
                results = [exc] * len(sendable)
            sent: list[int] = []
            for (row, _rec), error in zip(sendable, results, strict=True):
                if error is None:
                    sent.append(row.id)
                else:
                    errors[row.id] = (row, error)
            if sent:
                self._mark_sent(conn, sent)
            for row, failure in errors.values():
                self._record_failure(conn, row, failure)
            self.stats.published += len(sent)
        if sent:
            _PUBLISHED.add(len(sent), self._attrs)
        if outage is not None:
            self.stats.outages += 1
            _OUTAGES.add(1, self._attrs)
            raise outage
        return len(sent)

    def _prepare(self, rows: Sequence[Any]) -> tuple[list[tuple[Any, RawRecord]], dict[int, tuple[Any, BaseException]]]:
        """The records to send now: a row that failed before holds back the later rows of its topic and key
        (per-key order), and a row whose stored headers cannot be decoded fails on its own."""
        sendable: list[tuple[Any, RawRecord]] = []
        errors: dict[int, tuple[Any, BaseException]] = {}
        blocked: set[tuple[str, bytes | None]] = set()
        for r in rows:
            lane = (r.topic, r.message_key)
            if lane in blocked:
                continue
            if r.attempts:
                blocked.add(lane)  # it may fail again: nothing behind it may overtake it
            try:
                headers = load_headers(r.headers)
            except (ValueError, TypeError, binascii.Error) as exc:
                errors[r.id] = (r, SerializationError(f"stored headers cannot be decoded: {exc}"))
                blocked.add(lane)
                continue
            headers[EVENT_ID_HEADER] = r.event_id
            key = bytes(r.message_key) if r.message_key is not None else None
            sendable.append((r, (r.topic, bytes(r.payload), key, headers)))
        return sendable, errors

    def _record_failure(self, conn: Any, row: Any, error: BaseException) -> None:
        t, dead = self.outbox.table, self.outbox.dead
        attempts = int(row.attempts or 0) + 1
        text = f"{type(error).__name__}: {error}"[:2000]
        if isinstance(error, BrokerUnavailableError) or attempts < self.max_attempts:
            if not isinstance(error, BrokerUnavailableError):
                self.stats.failed_attempts += 1
                log.warning("outbox relay: event %s failed (attempt %d/%d): %s",
                            row.event_id, attempts, self.max_attempts, text)
            conn.execute(update(t).where(t.c.id == row.id).values(attempts=attempts, last_error=text))
            return
        self.stats.failed_attempts += 1
        self.stats.dead_lettered += 1
        _DEAD.add(1, self._attrs)
        log.error("outbox relay: event %s failed %d times (%s); moved to %s", row.event_id, attempts, text, dead.name)
        conn.execute(
            insert(dead).values(
                id=row.id,
                event_id=row.event_id,
                topic=row.topic,
                message_key=row.message_key,
                payload=row.payload,
                headers=row.headers,
                created_at=row.created_at,
                dead_at=dt.datetime.now(dt.timezone.utc),
                attempts=attempts,
                last_error=text,
            )
        )
        conn.execute(delete(t).where(t.c.id == row.id))

    def _mark_sent(self, conn: Any, ids: list[int]) -> None:
        t = self.outbox.table
        conn.execute(update(t).where(t.c.id.in_(ids)).values(sent_at=dt.datetime.now(dt.timezone.utc)))

    def stop(self) -> None:
        self._stop.set()

    def run_forever(self, stop_event: threading.Event | None = None) -> None:
        """Relay until :meth:`stop` / ``stop_event``; outages back off exponentially up to ``max_backoff_s``."""
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
