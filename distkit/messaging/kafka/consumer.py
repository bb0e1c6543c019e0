"""Kafka group consumer: ``read_committed``, manual commits, assignment tracked for idle detection."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer as _RdConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from distkit.errors import MessagingError
from distkit.messaging.broker import ConsumerBase
from distkit.messaging.broker import TopicPartition as TP
from distkit.messaging.kafka.errors import translate
from distkit.messaging.message import Codec, Message, consumed, decode_headers

log = logging.getLogger(__name__)
_BENIGN = frozenset({KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC})


class KafkaConsumer(ConsumerBase):
    """A member of ``group_id`` subscribed to ``topics``; ``raw`` is the underlying librdkafka consumer."""

    def __init__(
        self, config: dict[str, Any], codec: Codec, group_id: str, topics: list[str], close_timeout_s: float = 30.0
    ) -> None:
        self.group_id = group_id
        self._close_timeout_s = close_timeout_s
        self.codec = codec
        self._assigned: set[TP] = set()
        self._lock = threading.Lock()
        self.raw = _RdConsumer(
            {
                **config,
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
            }
        )
        self.raw.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        self._closed = False

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self._assigned |= {(p.topic, p.partition) for p in partitions}

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self._assigned -= {(p.topic, p.partition) for p in partitions}

    def assignment(self) -> list[TP]:
        with self._lock:
            return sorted(self._assigned)

    def poll_batch(self, max_messages: int, timeout_s: float = 1.0) -> list[Message]:
        if self._closed:
            raise MessagingError("consumer is closed")
        try:
            raw = self.raw.consume(num_messages=max_messages, timeout=timeout_s)
        except KafkaException as exc:
            raise translate(exc, f"poll of group {self.group_id!r}") from exc
        out: list[Message] = []
        decode = self.codec.decode
        for m in raw:
            err = m.error()
            if err is not None:
                if err.code() in _BENIGN or not err.fatal():
                    continue
                raise translate(KafkaException(err), f"poll of group {self.group_id!r}")
            _ts_type, ts = m.timestamp()
            raw_value = m.value()
            hdrs = m.headers()
            out.append(
                consumed(
                    m.topic() or "",
                    m.partition(),
                    m.offset(),
                    m.key(),
                    None if raw_value is None else decode(raw_value),
                    decode_headers(hdrs) if hdrs else {},  # type: ignore[arg-type]
                    ts if ts and ts > 0 else None,
                    raw_value,
                )
            )
        return out

    def committed(self, partitions: list[TP], timeout_s: float = 10.0) -> dict[TP, int | None]:
        """The group's committed offsets, asked from the coordinator (waits out pending transactions)."""
        if not partitions:
            return {}
        try:
            got = self.raw.committed([TopicPartition(t, p) for t, p in partitions], timeout=timeout_s)
        except KafkaException as exc:
            raise translate(exc, f"committed offsets of group {self.group_id!r}") from exc
        out: dict[TP, int | None] = {}
        for tp in got:
            if tp.error is not None:
                raise translate(KafkaException(tp.error), f"committed offset of {tp.topic}[{tp.partition}]")
            out[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
        return out

    def high_watermark(self, topic: str, partition: int) -> int | None:
        """The partition's end offset as of the last fetch (no broker round trip), or ``None`` if not known yet.
        Transaction markers occupy offsets too, so a caught-up ``read_committed`` reader can be 1 behind it."""
        try:
            _low, high = self.raw.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        except (KafkaException, TypeError):
            return None
        return int(high) if high is not None and high >= 0 else None

    def _commit_offsets(self, offsets: Mapping[TP, int]) -> None:
        tps = [TopicPartition(t, p, off) for (t, p), off in offsets.items()]
        try:
            self.raw.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            raise translate(exc, f"offset commit of group {self.group_id!r}") from exc

    def seek(self, topic: str, partition: int, offset: int) -> None:
        try:
            self.raw.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            raise translate(exc, f"seek {topic}[{partition}] to {offset}") from exc

    def close(self) -> None:
        """Leave the group. Bounded: librdkafka's ``close()`` can block for good (an unreachable coordinator,
        a pending rebalance), so it runs on a helper thread and is abandoned after ``close_timeout_s``."""
        if self._closed:
            return
        self._closed = True
        closer = threading.Thread(target=self._close_quietly, name=f"distkit-close-{self.group_id}"[:60], daemon=True)
        closer.start()
        closer.join(self._close_timeout_s)
        if closer.is_alive():
            log.warning("consumer of group %r did not close within %.1f s; abandoned", self.group_id,
                        self._close_timeout_s)

    def _close_quietly(self) -> None:
        try:
            self.raw.close()
        except (KafkaException, RuntimeError) as exc:
            log.debug("consumer close of group %r failed: %s", self.group_id, exc)
