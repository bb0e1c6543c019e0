"""The broker contract both :class:`~distkit.messaging.KafkaBroker` and
:class:`~distkit.messaging.InMemoryBroker` implement, plus the logic they share.

Example code is written once against these protocols and runs unchanged on either broker: the embedded
demo uses the in-memory one, production uses Kafka. Shared behaviour (encoding before sending, the
transaction context manager, ``poll_iter``) lives in the base classes here so the two backends only
implement their small primitive operations.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

from distkit.errors import InvalidArgumentError, MessagingError
from distkit.messaging._tracing import with_trace_headers
from distkit.messaging.message import Codec, Message, check_partition, check_topic_name, encode_headers, encode_key

TopicPartition = tuple[str, int]
RawRecord = tuple[str, bytes | None, bytes | None, Mapping[str, str | bytes] | None]  # topic, value, key, headers
ISOLATION_LEVELS = ("read_committed", "read_uncommitted")
OFFSET_RESETS = ("earliest", "latest")
_P = TypeVar("_P", bound="TransactionalProducerBase")
_NO_HEADERS: list[tuple[str, bytes]] = []  # shared, never mutated: no list per send


@functools.lru_cache(maxsize=4096)
def _valid_topic(topic: str) -> bool:
    check_topic_name(topic)
    return True


def valid_topic(topic: str) -> None:
    """:func:`check_topic_name`, cached for names that passed (a failure raises and is not cached)."""
    if type(topic) is not str:
        check_topic_name(topic)
    _valid_topic(topic)


@runtime_checkable
class Producer(Protocol):
    """A plain (idempotent, ordered per partition) producer, as the outbox relay uses."""

    def send(
        self,
        topic: str,
        value: Any = None,
        *,
        key: bytes | str | int | None = None,
        headers: Mapping[str, str | bytes] | None = None,
        partition: int | None = None,
    ) -> None: ...

    def send_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Mapping[str, str | bytes] | None = None,
        partition: int | None = None,
    ) -> None:
        """Send ``value`` bytes as they are, bypassing the codec (``None`` is a tombstone)."""

    def publish_raw(self, records: Sequence[RawRecord], timeout_s: float = 30.0) -> list[MessagingError | None]:
        """Send raw ``(topic, value, key, headers)`` records, wait for the acks, return each one's error or ``None``."""

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every sent message is acknowledged; raise if any failed."""

    def close(self) -> None: ...


@runtime_checkable
class TransactionalProducer(Producer, Protocol):
    """A producer whose messages (and consumer offsets) become visible atomically, or not at all.

    Used as a context manager it is one transaction: normal exit commits, an exception aborts::

        with broker.transactional_producer("order-svc-1") as tx:
            tx.send("orders", {"order_id": 42}, key=b"42", headers={"event-id": "e-1"})

    The object stays usable for further transactions (``with tx: ...`` again); one producer per
    ``transactional_id`` per broker object.
    """

    transactional_id: str

    def begin(self) -> None: ...

    def send_offsets(self, consumer: Consumer, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``consumer``'s group offsets (next offset to read) inside this transaction."""

    def commit(self) -> None: ...

    def abort(self) -> None: ...

    def __enter__(self) -> TransactionalProducer: ...

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None: ...


@runtime_checkable
class Consumer(Protocol):
    """A group member reading ``read_committed`` by default; offsets are committed explicitly."""

    group_id: str

    def poll(self, timeout_s: float = 1.0) -> Message | None: ...

    def poll_batch(self, max_messages: int, timeout_s: float = 1.0) -> list[Message]: ...

    def poll_iter(
        self,
        timeout_s: float = 1.0,
        *,
        max_messages: int | None = None,
        idle_timeout_s: float | None = None,
        stop_event: threading.Event | None = None,
    ) -> Iterator[Message]: ...

    def commit(
        self, message: Message | None = None, *, offsets: Mapping[TopicPartition, int] | None = None
    ) -> None: ...

    def seek(self, topic: str, partition: int, offset: int) -> None: ...

    def committed(self, partitions: list[TopicPartition], timeout_s: float = 10.0) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (next offset to read; ``None`` if nothing committed), from the broker."""

    def assignment(self) -> list[TopicPartition]: ...

    def close(self) -> None: ...


@runtime_checkable
class Broker(Protocol):
    """What examples and :class:`~distkit.messaging.TransactionalProcessor` need from a broker."""

    def transactional_producer(self, transactional_id: str) -> TransactionalProducer: ...

    def producer(self) -> Producer: ...

    def consumer(
        self,
        group_id: str,
        topics: list[str],
        *,
        auto_offset_reset: str = "earliest",
        isolation_level: str = "read_committed",
    ) -> Consumer: ...

    def create_topic(self, name: str, partitions: int = 1) -> None: ...

    def close(self) -> None: ...


def check_consumer_args(group_id: str, topics: list[str], auto_offset_reset: str, isolation_level: str) -> None:
    if not group_id:
        raise InvalidArgumentError("consumer needs a non-empty group_id")
    if not topics or isinstance(topics, str):
        raise InvalidArgumentError(f"topics must be a non-empty list of names, got {topics!r}")
    if auto_offset_reset not in OFFSET_RESETS:
        raise InvalidArgumentError(f"auto_offset_reset must be one of {OFFSET_RESETS}, got {auto_offset_reset!r}")
    if isolation_level not in ISOLATION_LEVELS:
        raise InvalidArgumentError(f"isolation_level must be one of {ISOLATION_LEVELS}, got {isolation_level!r}")


class ProducerBase:
    """Encodes key, value and headers before handing bytes to the backend's ``_produce``."""

    codec: Codec

    def send(
        self,
        topic: str,
        value: Any = None,
        *,
        key: bytes | str | int | None = None,
        headers: Mapping[str, str | bytes] | None = None,
        partition: int | None = None,
    ) -> None:
        valid_topic(topic)
        if partition is not None:
            check_partition(partition)
        payload = self.codec.encode(value)  # raises SerializationError before anything is sent
        headers = with_trace_headers(headers)  # the trace (and request context) travel with the message
        self._produce(topic, encode_key(key), payload, encode_headers(headers) if headers else _NO_HEADERS, partition)

    def send_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Mapping[str, str | bytes] | None = None,
        partition: int | None = None,
    ) -> None:
        """Send ``value`` bytes unchanged (no codec); ``None`` produces a tombstone."""
        valid_topic(topic)
        check_partition(partition)
        if value is not None and not isinstance(value, bytes):
            raise InvalidArgumentError(f"send_raw takes bytes or None, got {type(value).__name__}")
        self._produce(topic, encode_key(key), value, encode_headers(headers), partition)

    def publish_raw(self, records: Sequence[RawRecord], timeout_s: float = 30.0) -> list[MessagingError | None]:
        """Send every ``(topic, value, key, headers)`` record unchanged and wait for the acks; one entry per
        record: ``None`` if it was delivered, else the error that record met (the others are unaffected)."""
        results: list[MessagingError | None] = [None] * len(records)
        for i, (topic, value, key, headers) in enumerate(records):
            try:
                self.send_raw(topic, value, key=key, headers=headers)
            except MessagingError as exc:
                results[i] = exc
        self.flush(timeout_s)
        return results

    def flush(self, timeout_s: float = 30.0) -> None:
        raise NotImplementedError

    def send_message(self, message: Message) -> None:
        """Send a :class:`Message` (as a handler returns them)."""
        self.send(message.topic, message.value, key=message.key, headers=message.headers, partition=message.partition)

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None,
    ) -> None:
        raise NotImplementedError


class TransactionalProducerBase(ProducerBase):
    """The context-manager protocol on top of the backend's begin/commit/abort."""

    transactional_id: str
    _in_txn: bool = False

    def begin(self) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    @property
    def in_transaction(self) -> bool:
        return self._in_txn

    def __enter__(self: _P) -> _P:
        self.begin()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.commit()
            return
        if self._in_txn:
            try:
                self.abort()
            except MessagingError:
                # the original exception matters more; a fenced/failed abort leaves nothing visible anyway
                self._in_txn = False

    def _require_txn(self, what: str) -> None:
        if not self._in_txn:
            raise MessagingError(f"{what} outside a transaction: call begin() or use `with producer:` first")


class ConsumerBase:
    """``poll_iter`` and message-based ``commit`` on top of the backend's poll/commit primitives."""

    group_id: str

    def poll(self, timeout_s: float = 1.0) -> Message | None:
        batch = self.poll_batch(1, timeout_s)
        return batch[0] if batch else None

    def poll_batch(self, max_messages: int, timeout_s: float = 1.0) -> list[Message]:
        raise NotImplementedError

    def assignment(self) -> list[TopicPartition]:
        raise NotImplementedError

    def _commit_offsets(self, offsets: Mapping[TopicPartition, int]) -> None:
        raise NotImplementedError

    def committed(self, partitions: list[TopicPartition], timeout_s: float = 10.0) -> dict[TopicPartition, int | None]:
        raise NotImplementedError

    def commit(self, message: Message | None = None, *, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit ``message`` as processed (its offset + 1), or explicit ``offsets`` (next offset to read)."""
        if message is not None:
            if message.partition is None or message.offset is None:
                raise InvalidArgumentError("only consumed messages (with partition and offset) can be committed")
            offsets = {(message.topic, message.partition): message.offset + 1, **(offsets or {})}
        if offsets:
            self._commit_offsets(offsets)

    def poll_iter(
        self,
        timeout_s: float = 1.0,
        *,
        max_messages: int | None = None,
        idle_timeout_s: float | None = None,
        stop_event: threading.Event | None = None,
    ) -> Iterator[Message]:
        """Yield messages; each one is committed when the loop asks for the next (after your handler ran).

        Stops after ``max_messages``, when ``stop_event`` is set, or after ``idle_timeout_s`` without a
        message once partitions are assigned (the group join itself never counts as idle). A handler that
        raises leaves its message uncommitted, so the group re-delivers it.
        """
        seen = 0
        idle_since: float | None = None
        while max_messages is None or seen < max_messages:
            if stop_event is not None and stop_event.is_set():
                return
            msg = self.poll(timeout_s)
            if msg is None:
                if idle_timeout_s is not None and self.assignment():
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since >= idle_timeout_s:
                        return
                continue
            idle_since = None
            seen += 1
            yield msg
            self.commit(msg)
