"""Kafka producers: idempotent plain producer and transactional producer (EOS)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka import Producer as _RdProducer

from distkit.errors import MessagingError, ProducerFencedError
from distkit.messaging.broker import ProducerBase, TransactionalProducerBase
from distkit.messaging.broker import TopicPartition as TP
from distkit.messaging.kafka.errors import kafka_error, translate
from distkit.messaging.message import Codec

TopicCheck = Callable[[str], None]


class _Produces:
    """The librdkafka ``produce`` call with delivery-error tracking, shared by both producers."""

    _rd: Any
    _check_topic: TopicCheck
    _errors: list[str]
    _errors_lock: threading.Lock

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            with self._errors_lock:
                self._errors.append(f"{msg.topic()}: {err.str()}")

    def _produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], partition: int | None
    ) -> None:
        self._check_topic(topic)
        while True:
            try:
                if partition is None:
                    self._rd.produce(topic, value, key, headers=headers, on_delivery=self._on_delivery)
                else:
                    self._rd.produce(topic, value, key, partition, headers=headers, on_delivery=self._on_delivery)
                return
            except BufferError:  # local queue full: serve delivery reports, then retry
                self._rd.poll(0.1)
            except KafkaException as exc:
                raise translate(exc, f"produce to {topic}") from exc

    def _take_errors(self) -> list[str]:
        with self._errors_lock:
            errors, self._errors = self._errors, []
        return errors


class KafkaProducer(_Produces, ProducerBase):
    """Idempotent producer (``acks=all``, ``enable.idempotence``): per-partition order survives retries."""

    def __init__(self, config: dict[str, Any], codec: Codec, check_topic: TopicCheck) -> None:
        self.codec = codec
        self._check_topic = check_topic
        self._errors, self._errors_lock = [], threading.Lock()
        self._rd = _RdProducer({**config, "enable.idempotence": True, "acks": "all"})

    def flush(self, timeout_s: float = 30.0) -> None:
        left = self._rd.flush(timeout_s)
        errors = self._take_errors()
        if errors or left:
            raise MessagingError(
                f"{len(errors)} message(s) failed, {left} still queued after {timeout_s} s: " + "; ".join(errors[:3])
            )

    def close(self) -> None:
        self._rd.flush(10)


class KafkaTransactionalProducer(_Produces, TransactionalProducerBase):
    """Transactional producer; ``init_transactions`` runs once at construction (fencing older instances)."""

    def __init__(
        self, config: dict[str, Any], codec: Codec, check_topic: TopicCheck, transactional_id: str, timeout_s: float
    ) -> None:
        self.codec = codec
        self.transactional_id = transactional_id
        self._check_topic = check_topic
        self._timeout_s = timeout_s
        self._errors, self._errors_lock = [], threading.Lock()
        self._rd = _RdProducer(
            {**config, "transactional.id": transactional_id, "enable.idempotence": True, "acks": "all"}
        )
        self._fenced = False
        self._call(lambda: self._rd.init_transactions(timeout_s), "init_transactions")

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        if self._fenced:
            raise ProducerFencedError(f"producer {self.transactional_id!r} was fenced; create a new one")
        try:
            return fn()
        except KafkaException as exc:
            error = translate(exc, f"{what} of {self.transactional_id!r}")
            if isinstance(error, ProducerFencedError) or (kafka_error(exc) and kafka_error(exc).fatal()):
                self._fenced = True
                self._in_txn = False
            raise error from exc

    def begin(self) -> None:
        if self._in_txn:
            raise MessagingError("a transaction is already open on this producer")
        self._take_errors()
        self._call(self._rd.begin_transaction, "begin_transaction")
        self._in_txn = True

    def _produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], partition: int | None
    ) -> None:
        self._require_txn("send")
        super()._produce(topic, key, value, headers, partition)

    def send_offsets(self, consumer: Any, offsets: Mapping[TP, int]) -> None:
        self._require_txn("send_offsets")
        rd_consumer = getattr(consumer, "raw", None)
        if rd_consumer is None:
            raise MessagingError("send_offsets needs a consumer of the same KafkaBroker")
        tps = [TopicPartition(t, p, off) for (t, p), off in offsets.items()]
        meta = rd_consumer.consumer_group_metadata()
        self._call(lambda: self._rd.send_offsets_to_transaction(tps, meta, self._timeout_s), "send_offsets")

    def flush(self, timeout_s: float = 30.0) -> None:
        self._rd.flush(timeout_s)

    def commit(self) -> None:
        self._require_txn("commit")
        try:
            self._call(lambda: self._rd.commit_transaction(self._timeout_s), "commit_transaction")
        except ProducerFencedError:
            raise
        except MessagingError:
            self._abort_quietly()
            raise
        self._in_txn = False

    def _abort_quietly(self) -> None:
        try:
            self._rd.abort_transaction(self._timeout_s)
        except KafkaException:
            pass  # fatal or already aborted: nothing of this transaction is visible either way
        self._in_txn = False

    def abort(self) -> None:
        self._require_txn("abort")
        try:
            self._call(lambda: self._rd.abort_transaction(self._timeout_s), "abort_transaction")
        finally:
            self._in_txn = False

    def close(self) -> None:
        if self._in_txn and not self._fenced:
            self._abort_quietly()
        self._rd.flush(5)
