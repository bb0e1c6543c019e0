"""An in-process broker with Kafka's semantics, so ``make demo`` and unit tests need no Kafka.

It has what the examples rely on: topics with partitions, consumer groups that split partitions and
keep committed offsets, independent groups that each see every message, transactions whose messages stay
invisible to ``read_committed`` consumers until commit (and forever after an abort), offsets committed
inside a transaction, and zombie fencing by ``transactional_id`` epoch. The same contract tests run
against it and against :class:`~distkit.messaging.KafkaBroker`.
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from distkit.errors import InvalidArgumentError, MessagingError, ProducerFencedError, UnknownTopicError
from distkit.messaging.broker import (
    ConsumerBase,
    ProducerBase,
    TopicPartition,
    TransactionalProducerBase,
    check_consumer_args,
)
from distkit.messaging.message import Codec, JsonCodec, Message, decode_headers

_OPEN, _COMMITTED, _ABORTED = "open", "committed", "aborted"


@dataclass
class _Txn:
    state: str = _OPEN
    offsets: dict[tuple[str, TopicPartition], int] = field(default_factory=dict)  # (group, tp) -> offset


@dataclass
class _Record:
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp: int
    txn: _Txn | None


@dataclass
class _Group:
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    members: list[MemoryConsumer] = field(default_factory=list)


class InMemoryBroker:
    """A thread-safe broker living in this process. ``auto_create_topics`` mirrors Kafka's broker setting.

    >>> broker = InMemoryBroker()
    >>> with broker.transactional_producer("svc-1") as tx:
    ...     tx.send("orders", {"order_id": 42}, key=b"42")
    >>> c = broker.consumer(group_id="mail", topics=["orders"])
    >>> c.poll(0).value
    {'order_id': 42}
    """

    def __init__(
        self, *, codec: Codec | None = None, auto_create_topics: bool = True, default_partitions: int = 1
    ) -> None:
        self.codec: Codec = codec or JsonCodec()
        self.auto_create_topics = auto_create_topics
        self.default_partitions = default_partitions
        self._cond = threading.Condition()
        self._topics: dict[str, list[list[_Record]]] = {}
        self._groups: dict[str, _Group] = {}
        self._epochs: dict[str, int] = {}
        self._open_txn: dict[str, _Txn] = {}
        self._producers: dict[str, MemoryTransactionalProducer] = {}
        self._rr = itertools.count()

    # -- admin -------------------------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int = 1) -> None:
        if partitions < 1:
            raise InvalidArgumentError(f"a topic needs at least one partition, got {partitions}")
        with self._cond:
            self._topics.setdefault(name, [[] for _ in range(partitions)])

    def topics(self) -> list[str]:
        with self._cond:
            return sorted(self._topics)

    def _partitions(self, topic: str, *, create: bool) -> list[list[_Record]]:
        parts = self._topics.get(topic)
        if parts is None:
            if not (create and self.auto_create_topics):
                raise UnknownTopicError(f"topic {topic!r} does not exist and auto-create is off; create it first")
            parts = self._topics[topic] = [[] for _ in range(self.default_partitions)]
        return parts

    # -- clients -----------------------------------------------------------------------------------
    def transactional_producer(self, transactional_id: str) -> MemoryTransactionalProducer:
        """The producer for ``transactional_id`` (created and initialised on first use)."""
        if not transactional_id:
            raise InvalidArgumentError("transactional_id must be a non-empty string")
        with self._cond:
            existing = self._producers.get(transactional_id)
            if existing is not None and not existing.closed and existing.epoch == self._epochs[transactional_id]:
                return existing
            producer = MemoryTransactionalProducer(self, transactional_id)
            self._producers[transactional_id] = producer
            return producer

    def new_transactional_producer(self, transactional_id: str) -> MemoryTransactionalProducer:
        """A *second* producer instance with this id (fences the first), as another process would create."""
        with self._cond:
            producer = MemoryTransactionalProducer(self, transactional_id)
            self._producers[transactional_id] = producer
            return producer

    def producer(self) -> MemoryProducer:
        return MemoryProducer(self)

    def consumer(
        self,
        group_id: str,
        topics: list[str],
        *,
        auto_offset_reset: str = "earliest",
        isolation_level: str = "read_committed",
    ) -> MemoryConsumer:
        check_consumer_args(group_id, topics, auto_offset_reset, isolation_level)
        return MemoryConsumer(self, group_id, list(topics), auto_offset_reset, isolation_level)

    def close(self) -> None:
        with self._cond:
            for p in list(self._producers.values()):
                p.closed = True
            self._producers.clear()

    # -- internals used by the clients (all under self._cond) --------------------------------------
    def _append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        partition: int | None,
        txn: _Txn | None,
    ) -> None:
        with self._cond:
            parts = self._partitions(topic, create=True)
            if partition is None:
                partition = zlib.crc32(key) % len(parts) if key is not None else next(self._rr) % len(parts)
            elif not 0 <= partition < len(parts):
                raise InvalidArgumentError(f"topic {topic!r} has {len(parts)} partitions; no partition {partition}")
            log = parts[partition]
            log.append(_Record(len(log), key, value, headers, time.time_ns() // 1_000_000, txn))
            self._cond.notify_all()

    def _init_epoch(self, transactional_id: str) -> int:
        """Bump the epoch: the previous holder's open transaction is aborted and it is fenced."""
        with self._cond:
            old = self._open_txn.pop(transactional_id, None)
            if old is not None:
                old.state = _ABORTED
            self._epochs[transactional_id] = self._epochs.get(transactional_id, 0) + 1
            self._cond.notify_all()
            return self._epochs[transactional_id]

    def _rebalance(self, group: _Group) -> None:
        """Range-free round robin of every subscribed partition over the members, in join order."""
        tps = sorted(
            {(t, p) for m in group.members for t in m.topics for p in range(len(self._partitions(t, create=True)))}
        )
        for m in group.members:
            m._assigned = []
        live = [m for m in group.members if set(m.topics)]
        for i, tp in enumerate(tps):
            owners = [m for m in live if tp[0] in m.topics]
            if owners:
                owners[i % len(owners)]._assigned.append(tp)
        for m in group.members:
            m._positions = {tp: pos for tp, pos in m._positions.items() if tp in m._assigned}


class MemoryProducer(ProducerBase):
    """Non-transactional producer: messages are visible at once."""

    def __init__(self, broker: InMemoryBroker) -> None:
        self._broker = broker
        self.codec = broker.codec

    def _produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], partition: int | None
    ) -> None:
        self._broker._append(topic, key, value, headers, partition, None)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Nothing is buffered in memory."""

    def close(self) -> None:
        """Nothing to release."""


class MemoryTransactionalProducer(TransactionalProducerBase):
    """Transactional producer of :class:`InMemoryBroker` (see the protocol for semantics)."""

    def __init__(self, broker: InMemoryBroker, transactional_id: str) -> None:
        self._broker = broker
        self.codec = broker.codec
        self.transactional_id = transactional_id
        self.epoch = broker._init_epoch(transactional_id)
        self.closed = False
        self._txn: _Txn | None = None

    def _check_epoch(self) -> None:
        if self.closed:
            raise MessagingError(f"producer {self.transactional_id!r} is closed")
        if self._broker._epochs.get(self.transactional_id) != self.epoch:
            self._in_txn = False
            raise ProducerFencedError(
                f"producer {self.transactional_id!r} (epoch {self.epoch}) was fenced by a newer instance; "
                "stop this one: its open transaction was aborted"
            )

    def begin(self) -> None:
        with self._broker._cond:
            self._check_epoch()
            if self._in_txn:
                raise MessagingError("a transaction is already open on this producer")
            self._txn = _Txn()
            self._broker._open_txn[self.transactional_id] = self._txn
            self._in_txn = True

    def _produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], partition: int | None
    ) -> None:
        with self._broker._cond:
            self._require_txn("send")
            self._check_epoch()
            self._broker._append(topic, key, value, headers, partition, self._txn)

    def send_offsets(self, consumer: object, offsets: Mapping[TopicPartition, int]) -> None:
        group_id = getattr(consumer, "group_id", None)
        if not isinstance(group_id, str):
            raise InvalidArgumentError("send_offsets needs a consumer of this broker")
        with self._broker._cond:
            self._require_txn("send_offsets")
            self._check_epoch()
            assert self._txn is not None
            for tp, off in offsets.items():
                self._txn.offsets[(group_id, tp)] = off

    def flush(self, timeout_s: float = 30.0) -> None:
        """Nothing is buffered in memory."""

    def _finish(self, state: str) -> None:
        with self._broker._cond:
            self._require_txn("commit" if state == _COMMITTED else "abort")
            self._check_epoch()
            assert self._txn is not None
            self._txn.state = state
            if state == _COMMITTED:
                for (group_id, tp), off in self._txn.offsets.items():
                    self._broker._groups.setdefault(group_id, _Group()).committed[tp] = off
            self._broker._open_txn.pop(self.transactional_id, None)
            self._txn, self._in_txn = None, False
            self._broker._cond.notify_all()

    def commit(self) -> None:
        self._finish(_COMMITTED)

    def abort(self) -> None:
        self._finish(_ABORTED)

    def close(self) -> None:
        with self._broker._cond:
            if self._in_txn and self._broker._epochs.get(self.transactional_id) == self.epoch:
                self._finish(_ABORTED)
            self.closed = True


class MemoryConsumer(ConsumerBase):
    """Group member of :class:`InMemoryBroker`."""

    def __init__(
        self, broker: InMemoryBroker, group_id: str, topics: list[str], auto_offset_reset: str, isolation_level: str
    ) -> None:
        self._broker = broker
        self.group_id = group_id
        self.topics = topics
        self._reset = auto_offset_reset
        self._committed_only = isolation_level == "read_committed"
        self._assigned: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._closed = False
        with broker._cond:
            for t in topics:
                broker._partitions(t, create=True)
            self._group = broker._groups.setdefault(group_id, _Group())
            self._group.members.append(self)
            broker._rebalance(self._group)

    def assignment(self) -> list[TopicPartition]:
        with self._broker._cond:
            return list(self._assigned)

    def _position(self, tp: TopicPartition, log: list[_Record]) -> int:
        pos = self._positions.get(tp)
        if pos is None:
            pos = self._group.committed.get(tp)
            if pos is None:
                pos = 0 if self._reset == "earliest" else len(log)
            self._positions[tp] = pos
        return pos

    def _take(self, max_messages: int) -> list[Message]:
        out: list[Message] = []
        codec = self._broker.codec
        for tp in self._assigned:
            log = self._broker._topics[tp[0]][tp[1]]
            pos = self._position(tp, log)
            while pos < len(log) and len(out) < max_messages:
                rec = log[pos]
                state = rec.txn.state if rec.txn is not None else _COMMITTED
                if self._committed_only and state == _OPEN:
                    break  # the last stable offset: nothing past an open transaction is readable yet
                pos += 1
                if self._committed_only and state == _ABORTED:
                    continue
                out.append(
                    Message(
                        topic=tp[0],
                        partition=tp[1],
                        offset=rec.offset,
                        key=rec.key,
                        value=codec.decode(rec.value),
                        headers=decode_headers(list(rec.headers)),
                        timestamp=rec.timestamp,
                    )
                )
            self._positions[tp] = pos
            if len(out) >= max_messages:
                break
        return out

    def poll_batch(self, max_messages: int, timeout_s: float = 1.0) -> list[Message]:
        if self._closed:
            raise MessagingError("consumer is closed")
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._broker._cond:
            while True:
                got = self._take(max_messages)
                remaining = deadline - time.monotonic()
                if got or remaining <= 0:
                    return got
                self._broker._cond.wait(remaining)

    def _commit_offsets(self, offsets: Mapping[TopicPartition, int]) -> None:
        with self._broker._cond:
            self._group.committed.update(offsets)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        with self._broker._cond:
            if (topic, partition) not in self._assigned:
                raise InvalidArgumentError(f"partition {topic}[{partition}] is not assigned to this consumer")
            self._positions[(topic, partition)] = offset

    def position(self, tp: TopicPartition) -> int | None:
        with self._broker._cond:
            return self._positions.get(tp)

    def close(self) -> None:
        with self._broker._cond:
            if self._closed:
                return
            self._closed = True
            self._group.members.remove(self)
            self._broker._rebalance(self._group)
            self._broker._cond.notify_all()
