"""An in-process broker with Kafka's semantics, so ``make demo`` and unit tests need no Kafka.

It has what the examples rely on: topics with partitions, consumer groups that split partitions and
keep committed offsets, independent groups that each see every message, transactions whose messages stay
invisible to ``read_committed`` consumers until commit (and forever after an abort), offsets committed
inside a transaction, and zombie fencing by ``transactional_id`` epoch. Like Kafka (classic group
protocol) it also has:

- **delayed rebalances**: a join or leave starts a rebalance that completes only when every member has
  polled again (or missed ``rebalance_timeout_s`` and was expelled); until then members keep their old
  partitions and the newcomer gets none, so two members never read one partition at once;
- **generations**: offsets from a member of an older generation (or an expelled one) are refused --
  ``commit`` raises :class:`~distkit.errors.CommitFailedError`, ``send_offsets`` raises
  :class:`~distkit.errors.TransactionAbortedError` and the transaction must be aborted;
- **commit markers**: each committed or aborted transaction writes a control record to every partition it
  touched, so transactional offsets have gaps, and a group's committed offsets are not read while a
  transaction holding offsets for them is still open (``require_stable``);
- the same errors: :class:`~distkit.errors.MessagingError` where Kafka raises one (seek on a partition not
  assigned, a partition that does not exist), :class:`~distkit.errors.MessageTooLargeError` over
  ``max_message_bytes``, :class:`~distkit.errors.InvalidTopicError` for names Kafka refuses.

The same contract tests run against it and against :class:`~distkit.messaging.KafkaBroker`.
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from distkit.errors import (
    CommitFailedError,
    InvalidArgumentError,
    MessageTooLargeError,
    MessagingError,
    ProducerFencedError,
    TransactionAbortedError,
    UnknownTopicError,
)
from distkit.messaging.broker import (
    ConsumerBase,
    ProducerBase,
    TopicPartition,
    TransactionalProducerBase,
    check_consumer_args,
)
from distkit.messaging.message import Codec, JsonCodec, Message, check_topic_name, decode_headers

_OPEN, _COMMITTED, _ABORTED = "open", "committed", "aborted"


@dataclass
class _Txn:
    state: str = _OPEN
    offsets: dict[tuple[str, TopicPartition], int] = field(default_factory=dict)  # (group, tp) -> offset
    partitions: set[TopicPartition] = field(default_factory=set)  # where its commit/abort marker goes
    doomed: str | None = None  # an abortable error happened: only abort() is allowed


@dataclass
class _Record:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: int
    txn: _Txn | None
    control: bool = False  # a transaction marker: takes an offset, never delivered


@dataclass
class _Group:
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    members: list[MemoryConsumer] = field(default_factory=list)
    generation: int = 0
    rebalancing: bool = False
    rejoined: list[MemoryConsumer] = field(default_factory=list)
    rebalance_deadline: float = 0.0


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
        self,
        *,
        codec: Codec | None = None,
        auto_create_topics: bool = True,
        default_partitions: int = 1,
        rebalance_timeout_s: float = 10.0,
        max_message_bytes: int = 1_000_000,
    ) -> None:
        self.codec: Codec = codec or JsonCodec()
        self.auto_create_topics = auto_create_topics
        self.default_partitions = default_partitions
        self.rebalance_timeout_s = rebalance_timeout_s
        self.max_message_bytes = max_message_bytes
        self._cond = threading.Condition()
        self._topics: dict[str, list[list[_Record]]] = {}
        self._groups: dict[str, _Group] = {}
        self._epochs: dict[str, int] = {}
        self._open_txn: dict[str, _Txn] = {}
        self._producers: dict[str, MemoryTransactionalProducer] = {}
        self._rr = itertools.count()

    # -- admin -------------------------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int = 1) -> None:
        check_topic_name(name)
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
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None,
        txn: _Txn | None,
    ) -> None:
        size = len(value or b"") + len(key or b"") + sum(len(n) + len(v) for n, v in headers)
        if size > self.max_message_bytes:
            raise MessageTooLargeError(
                f"produce to {topic} failed: record of {size} bytes is over max_message_bytes={self.max_message_bytes}"
            )
        with self._cond:
            parts = self._partitions(topic, create=True)
            if partition is None:
                partition = zlib.crc32(key) % len(parts) if key is not None else next(self._rr) % len(parts)
            elif not 0 <= partition < len(parts):
                raise MessagingError(
                    f"produce to {topic} failed: the topic has {len(parts)} partition(s); no partition {partition}"
                )
            log = parts[partition]
            log.append(_Record(len(log), key, value, headers, time.time_ns() // 1_000_000, txn))
            if txn is not None:
                txn.partitions.add((topic, partition))
            self._cond.notify_all()

    def _mark(self, txn: _Txn) -> None:
        """The commit/abort marker: one control record per partition the transaction wrote to."""
        now = time.time_ns() // 1_000_000
        for topic, partition in sorted(txn.partitions):
            log = self._topics[topic][partition]
            log.append(_Record(len(log), None, None, [], now, txn, control=True))

    def _init_epoch(self, transactional_id: str) -> int:
        """Bump the epoch: the previous holder's open transaction is aborted and it is fenced."""
        with self._cond:
            old = self._open_txn.pop(transactional_id, None)
            if old is not None:
                old.state = _ABORTED
                self._mark(old)
            self._epochs[transactional_id] = self._epochs.get(transactional_id, 0) + 1
            self._cond.notify_all()
            return self._epochs[transactional_id]

    def _start_rebalance(self, group: _Group, joined: MemoryConsumer | None = None) -> None:
        """A member joined or left: members keep what they have until they poll again (rejoin)."""
        if not group.rebalancing:
            group.rebalancing = True
            group.rejoined = []
            group.rebalance_deadline = time.monotonic() + self.rebalance_timeout_s
        if joined is not None and joined not in group.rejoined:
            group.rejoined.append(joined)
        self._maybe_complete(group)

    def _rejoin(self, group: _Group, member: MemoryConsumer) -> None:
        """``member`` polled during a rebalance: it gives up its partitions (eager protocol) and waits."""
        if member not in group.rejoined:
            member._assigned, member._positions = [], {}
            group.rejoined.append(member)
        self._maybe_complete(group)

    def _maybe_complete(self, group: _Group) -> None:
        if not group.rebalancing:
            return
        missing = [m for m in group.members if m not in group.rejoined]
        if missing and time.monotonic() < group.rebalance_deadline:
            return
        for m in missing:  # missed the rebalance timeout: expelled, its generation is stale from now on
            m._assigned, m._positions, m._generation = [], {}, -1
        group.generation += 1
        group.rebalancing = False
        live = [m for m in group.rejoined if m in group.members]
        group.rejoined = []
        tps = sorted({(t, p) for m in live for t in m.topics for p in range(len(self._partitions(t, create=True)))})
        for m in live:
            m._assigned, m._positions, m._generation = [], {}, group.generation
        for i, tp in enumerate(tps):  # round robin of every subscribed partition over the members, in join order
            owners = [m for m in live if tp[0] in m.topics]
            if owners:
                owners[i % len(owners)]._assigned.append(tp)
        self._cond.notify_all()

    def _stable(self, group_id: str, tp: TopicPartition) -> bool:
        """No open transaction holds offsets for ``tp`` of ``group_id`` (Kafka's ``require_stable``)."""
        return not any((group_id, tp) in txn.offsets for txn in self._open_txn.values())


class MemoryProducer(ProducerBase):
    """Non-transactional producer: messages are visible at once."""

    def __init__(self, broker: InMemoryBroker) -> None:
        self._broker = broker
        self.codec = broker.codec

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None,
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
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None,
    ) -> None:
        with self._broker._cond:
            self._require_txn("send")
            self._check_epoch()
            self._check_doomed("send")
            self._broker._append(topic, key, value, headers, partition, self._txn)

    def _check_doomed(self, what: str) -> None:
        if self._txn is not None and self._txn.doomed:
            raise TransactionAbortedError(f"{what} failed: {self._txn.doomed}; abort the transaction")

    def send_offsets(self, consumer: object, offsets: Mapping[TopicPartition, int]) -> None:
        if not isinstance(consumer, MemoryConsumer) or consumer._broker is not self._broker:
            raise MessagingError("send_offsets needs a consumer of the same InMemoryBroker")
        with self._broker._cond:
            self._require_txn("send_offsets")
            self._check_epoch()
            self._check_doomed("send_offsets")
            assert self._txn is not None
            group = consumer._group
            if consumer._closed or consumer._generation != group.generation:
                self._txn.doomed = (
                    f"group {consumer.group_id!r} moved to generation {group.generation} "
                    f"(this member: {consumer._generation}); its offsets were refused"
                )
                self._check_doomed("send_offsets")
            for tp, off in offsets.items():
                self._txn.offsets[(consumer.group_id, tp)] = off

    def flush(self, timeout_s: float = 30.0) -> None:
        """Nothing is buffered in memory."""

    def _finish(self, state: str) -> None:
        with self._broker._cond:
            self._require_txn("commit" if state == _COMMITTED else "abort")
            self._check_epoch()
            assert self._txn is not None
            if state == _COMMITTED and self._txn.doomed:
                state, error = _ABORTED, f"commit failed: {self._txn.doomed}; the transaction was aborted"
            else:
                error = None
            self._txn.state = state
            self._broker._mark(self._txn)
            if state == _COMMITTED:
                for (group_id, tp), off in self._txn.offsets.items():
                    self._broker._groups.setdefault(group_id, _Group()).committed[tp] = off
            self._broker._open_txn.pop(self.transactional_id, None)
            self._txn, self._in_txn = None, False
            self._broker._cond.notify_all()
            if error is not None:
                raise TransactionAbortedError(error)

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
        self._generation = -1
        self._closed = False
        for t in topics:
            check_topic_name(t)
        with broker._cond:
            for t in topics:
                broker._partitions(t, create=True)
            self._group = broker._groups.setdefault(group_id, _Group())
            self._group.members.append(self)
            broker._start_rebalance(self._group, joined=self)

    def assignment(self) -> list[TopicPartition]:
        with self._broker._cond:
            return list(self._assigned)

    def _position(self, tp: TopicPartition, log: list[_Record]) -> int | None:
        pos = self._positions.get(tp)
        if pos is None:
            if not self._broker._stable(self.group_id, tp):
                return None  # an open transaction holds offsets for it: wait until it ends
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
            start = self._position(tp, log)
            if start is None:
                continue
            pos = start
            while pos < len(log) and len(out) < max_messages:
                rec = log[pos]
                state = rec.txn.state if rec.txn is not None else _COMMITTED
                if self._committed_only and state == _OPEN:
                    break  # the last stable offset: nothing past an open transaction is readable yet
                pos += 1
                if rec.control or (self._committed_only and state == _ABORTED):
                    continue
                out.append(
                    Message(
                        topic=tp[0],
                        partition=tp[1],
                        offset=rec.offset,
                        key=rec.key,
                        value=None if rec.value is None else codec.decode(rec.value),
                        headers=decode_headers(list(rec.headers)),
                        timestamp=rec.timestamp,
                        raw_value=rec.value,
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
                group = self._group
                if group.rebalancing:
                    self._broker._rejoin(group, self)
                elif self._generation != group.generation:  # expelled: join again
                    self._broker._start_rebalance(group, joined=self)
                got = [] if group.rebalancing else self._take(max_messages)
                remaining = deadline - time.monotonic()
                if got or remaining <= 0:
                    return got
                wait = remaining
                if group.rebalancing:  # wake up for the rebalance deadline too
                    wait = max(0.001, min(remaining, group.rebalance_deadline - time.monotonic()))
                self._broker._cond.wait(wait)

    def _commit_offsets(self, offsets: Mapping[TopicPartition, int]) -> None:
        with self._broker._cond:
            group = self._group
            if self._closed or self._generation != group.generation:
                raise CommitFailedError(
                    f"offset commit of group {self.group_id!r} failed: the group moved to generation "
                    f"{group.generation} (this member: {self._generation}); re-read and retry"
                )
            group.committed.update(offsets)

    def committed(self, partitions: list[TopicPartition], timeout_s: float = 10.0) -> dict[TopicPartition, int | None]:
        deadline = time.monotonic() + timeout_s
        with self._broker._cond:
            while not all(self._broker._stable(self.group_id, tp) for tp in partitions):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MessagingError(f"committed offsets of group {self.group_id!r}: a transaction is open")
                self._broker._cond.wait(left)
            return {tp: self._group.committed.get(tp) for tp in partitions}

    def high_watermark(self, topic: str, partition: int) -> int | None:
        """The partition's end offset (its length), like Kafka's high watermark."""
        with self._broker._cond:
            parts = self._broker._topics.get(topic)
            return len(parts[partition]) if parts is not None and 0 <= partition < len(parts) else None

    def seek(self, topic: str, partition: int, offset: int) -> None:
        with self._broker._cond:
            if (topic, partition) not in self._assigned:
                raise MessagingError(f"seek {topic}[{partition}] to {offset} failed: partition not assigned")
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
            if self in self._group.rejoined:
                self._group.rejoined.remove(self)
            self._assigned, self._positions = [], {}
            if self._group.members:
                self._broker._start_rebalance(self._group)
            self._broker._cond.notify_all()
