"""Kafka producers: idempotent plain producer and transactional producer (EOS).

librdkafka's ``send_offsets_to_transaction`` does not honour its timeout when the group coordinator is gone
(librdkafka issue #5456), so that call (and ``init_transactions``) runs on a helper thread and is abandoned
after ``timeout_s``: the producer is then *broken* (every call raises
:class:`~distkit.errors.BrokerUnavailableError`) and must be replaced, which the processor does itself.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka import Producer as _RdProducer

from distkit.errors import BrokerUnavailableError, MessagingError, ProducerFencedError
from distkit.messaging._tracing import with_trace_headers
from distkit.messaging.broker import ProducerBase, RawRecord, TransactionalProducerBase, valid_topic
from distkit.messaging.broker import TopicPartition as TP
from distkit.messaging.kafka.errors import kafka_error, translate, translate_error
from distkit.messaging.message import Codec, check_partition, encode_headers, encode_key

TopicCheck = Callable[[str], None]
_GRACE_S = 2.0  # on top of the timeout librdkafka was given, before a call counts as hung
_ABORT_FLUSH_S = 1.0  # how long abort() waits for in-flight acks before ending the transaction


class _Hung(Exception):
    pass


class _Worker:
    """A daemon thread running the librdkafka calls whose own timeout cannot be trusted."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]] | None = None
        self._pid = -1

    def call(self, fn: Callable[[], Any], timeout_s: float) -> Any:
        if self._jobs is None or self._pid != os.getpid():  # first use, or a forked child (no threads)
            self._jobs, self._pid = queue.SimpleQueue(), os.getpid()
            threading.Thread(target=self._loop, args=(self._jobs,), name=self._name, daemon=True).start()
        box: list[Any] = []
        done = threading.Event()
        self._jobs.put((fn, box, done))
        if not done.wait(timeout_s):
            self._jobs = None  # this thread is stuck inside librdkafka; never hand it work again
            raise _Hung
        ok, value = box
        if ok:
            return value
        raise value

    @staticmethod
    def _loop(jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]]) -> None:
        while True:
            fn, box, done = jobs.get()
            try:
                box[:] = [True, fn()]
            except BaseException as exc:  # handed to the caller
                box[:] = [False, exc]
            done.set()


class _Produces:
    """The librdkafka ``produce`` call, shared by both producers."""

    _rd: Any
    _check_topic: TopicCheck
    _timeout_s: float = 30.0
    _topics_ok: set[str]
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
        """:meth:`ProducerBase.send <distkit.messaging.broker.ProducerBase.send>` with the checks done once per
        topic (name and existence) and one call into librdkafka: this is the hot path of every transaction."""
        if topic not in self._topics_ok:
            valid_topic(topic)
            self._check_topic(topic)
            if len(self._topics_ok) < 10_000:
                self._topics_ok.add(topic)
        if not getattr(self, "_in_txn", True):
            TransactionalProducerBase._require_txn(self, "send")  # type: ignore[arg-type]
        payload = self.codec.encode(value)  # raises SerializationError before anything is sent
        if key is not None and type(key) is not bytes:
            key = encode_key(key)
        headers = with_trace_headers(headers)  # the trace (and request context) travel with the message
        if headers or partition is not None:
            if partition is not None:
                check_partition(partition)
            self._produce(topic, key, payload, encode_headers(headers), partition)
            return
        try:
            self._rd.produce(topic, payload, key)
        except (BufferError, KafkaException):
            self._produce(topic, key, payload, [], None)  # the waiting/translating path

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None,
    ) -> None:
        self._check_topic(topic)
        produce = self._rd.produce
        deadline = 0.0
        while True:
            try:
                if partition is None:
                    if headers:
                        produce(topic, value, key, headers=headers)
                    else:
                        produce(topic, value, key)
                else:
                    produce(topic, value, key, partition, headers=headers or None)
                return
            except BufferError:  # local queue full: serve delivery reports, then retry (bounded)
                now = time.monotonic()
                deadline = deadline or now + self._timeout_s
                if now >= deadline:
                    raise BrokerUnavailableError(
                        f"produce to {topic}: the local queue stayed full for {self._timeout_s} s; is the broker up?"
                    ) from None
                self._rd.poll(0.1)
            except KafkaException as exc:
                raise translate(exc, f"produce to {topic}") from exc


class KafkaProducer(_Produces, ProducerBase):
    """Idempotent producer (``acks=all``, ``enable.idempotence``): per-partition order survives retries.

    Only failed deliveries are reported (``delivery.report.only.error``); :meth:`flush` raises if any failed.
    """

    def __init__(self, config: dict[str, Any], codec: Codec, check_topic: TopicCheck) -> None:
        self.codec = codec
        self._check_topic = check_topic
        self._topics_ok = set()
        self._errors: list[tuple[int | None, MessagingError]] = []
        self._errors_lock = threading.Lock()
        self._rd = _RdProducer(
            {
                **config,
                "enable.idempotence": True,
                "acks": "all",
                "delivery.report.only.error": True,
                "on_delivery": self._on_delivery,
            }
        )

    def _on_delivery(self, err: Any, msg: Any, index: int | None = None) -> None:
        if err is not None:
            error = translate_error(err, f"delivery to {msg.topic()}")
            with self._errors_lock:
                self._errors.append((index, error))

    def _take_errors(self) -> list[tuple[int | None, MessagingError]]:
        with self._errors_lock:
            errors, self._errors = self._errors, []
        return errors

    def flush(self, timeout_s: float = 30.0) -> None:
        left = self._rd.flush(timeout_s)
        errors = [e for _i, e in self._take_errors()]
        if left:
            raise BrokerUnavailableError(
                f"{left} message(s) still unacknowledged after {timeout_s} s; is the broker up?"
                + (f" ({errors[0]})" if errors else "")
            )
        if errors:
            first = errors[0]
            if len(errors) == 1:
                raise first
            raise type(first)(f"{len(errors)} message(s) failed: " + "; ".join(str(e) for e in errors[:3]))

    def publish_raw(self, records: Sequence[RawRecord], timeout_s: float = 30.0) -> list[MessagingError | None]:
        results: list[MessagingError | None] = [None] * len(records)
        self._take_errors()
        for i, (topic, value, key, headers) in enumerate(records):
            try:
                valid_topic(topic)
                self._check_topic(topic)
                produce = functools.partial(self._rd.produce, on_delivery=functools.partial(self._on_delivery, index=i))
                hdrs = self._headers(headers)
                while True:
                    try:
                        produce(topic, value, key, headers=hdrs)
                        break
                    except BufferError:
                        self._rd.poll(0.1)
            except KafkaException as exc:
                results[i] = translate(exc, f"produce to {topic}")
            except MessagingError as exc:
                results[i] = exc
        left = self._rd.flush(timeout_s)
        for index, error in self._take_errors():
            if index is not None:
                results[index] = error
        if left:
            raise BrokerUnavailableError(
                f"{left} message(s) still unacknowledged after {timeout_s} s; is the broker up?"
            )
        return results

    @staticmethod
    def _headers(headers: Mapping[str, str | bytes] | None) -> list[tuple[str, bytes]] | None:
        return encode_headers(headers) or None

    def close(self) -> None:
        self._rd.flush(10)


class KafkaTransactionalProducer(_Produces, TransactionalProducerBase):
    """Transactional producer; ``init_transactions`` runs once at construction (fencing older instances).

    Messages carry no per-message delivery callback: ``commit_transaction`` fails (and the transaction is
    aborted) if any message of the transaction was not delivered.
    """

    def __init__(
        self,
        config: dict[str, Any],
        codec: Codec,
        check_topic: TopicCheck,
        transactional_id: str,
        timeout_s: float,
        *,
        init: bool = True,
    ) -> None:
        self.codec = codec
        self.transactional_id = transactional_id
        self._check_topic = check_topic
        self._topics_ok = set()
        self._timeout_s = timeout_s
        self._rd = _RdProducer(
            {**config, "transactional.id": transactional_id, "enable.idempotence": True, "acks": "all"}
        )
        self._fenced = False
        self._broken: str | None = None  # why this instance cannot be used any more (a hung librdkafka call)
        self._initialised = False
        self._worker = _Worker(f"distkit-txn-{transactional_id}"[:60])
        if init:
            self.init()

    def init(self) -> None:
        """``init_transactions`` (fences older instances). After a timeout, call it again on the *same*
        instance: librdkafka resumes the pending call, whereas a second instance would race this one for the
        producer epoch and be fenced when this one's request completes later."""
        if not self._initialised:
            self._call(lambda: self._rd.init_transactions(self._timeout_s), "init_transactions", bounded=True)
            self._initialised = True

    @property
    def usable(self) -> bool:
        """``False`` once fenced, fatally failed or abandoned after a hung call: create a new producer."""
        return not (self._fenced or self._broken)

    def _call(self, fn: Callable[[], Any], what: str, *, bounded: bool = False) -> Any:
        if self._fenced:
            raise ProducerFencedError(f"producer {self.transactional_id!r} was fenced; create a new one")
        if self._broken:
            raise BrokerUnavailableError(
                f"{what} of {self.transactional_id!r}: this producer is unusable ({self._broken}); create a new one"
            )
        try:
            if bounded:
                return self._worker.call(fn, self._timeout_s + _GRACE_S)
            return fn()
        except _Hung:
            self._broken = f"{what} hung past {self._timeout_s} s"
            self._in_txn = False
            raise BrokerUnavailableError(
                f"{what} of {self.transactional_id!r} did not return within {self._timeout_s} s; is the broker up?"
            ) from None
        except KafkaException as exc:
            error = translate(exc, f"{what} of {self.transactional_id!r}")
            err = kafka_error(exc)
            if isinstance(error, ProducerFencedError) or (err is not None and err.fatal()):
                self._fenced = True
                self._in_txn = False
            raise error from exc

    def begin(self) -> None:
        if self._in_txn:
            raise MessagingError("a transaction is already open on this producer")
        self._call(self._rd.begin_transaction, "begin_transaction")
        self._in_txn = True

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None,
    ) -> None:
        if not self._in_txn:
            self._require_txn("send")
        super()._produce(topic, key, value, headers, partition)

    def send_offsets(self, consumer: Any, offsets: Mapping[TP, int]) -> None:
        self._require_txn("send_offsets")
        rd_consumer = getattr(consumer, "raw", None)
        if rd_consumer is None:
            raise MessagingError("send_offsets needs a consumer of the same KafkaBroker")
        tps = [TopicPartition(t, p, off) for (t, p), off in offsets.items()]
        meta = rd_consumer.consumer_group_metadata()
        timeout = self._timeout_s
        self._call(lambda: self._rd.send_offsets_to_transaction(tps, meta, timeout), "send_offsets", bounded=True)

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
        """Abort after a failed commit; if even that fails, retire this instance (a new one's
        ``init_transactions`` resolves whatever the broker holds for the id)."""
        if self.usable:
            try:
                self._call(lambda: self._rd.abort_transaction(self._timeout_s), "abort_transaction", bounded=True)
            except MessagingError as exc:
                if self.usable:
                    self._broken = f"abort failed: {exc}"
        self._in_txn = False

    def abort(self) -> None:
        self._require_txn("abort")
        # librdkafka issue #4849: an abort whose EndTxn reaches the coordinator before the transaction's
        # AddPartitionsToTxn was processed fails fatally with INVALID_TXN_STATE and kills the producer (seen
        # here when a send is aborted a few ms after the producer's previous commit). A message's ack proves its
        # partition is registered, so wait briefly for the acks first; a slower broker is left to the abort.
        if self.usable:
            self._rd.flush(min(self._timeout_s, _ABORT_FLUSH_S))
        try:
            self._call(lambda: self._rd.abort_transaction(self._timeout_s), "abort_transaction", bounded=True)
        except MessagingError as exc:
            if self.usable:
                self._broken = f"abort failed: {exc}"
            raise
        finally:
            self._in_txn = False

    def close(self) -> None:
        if self._in_txn and self.usable:
            self._abort_quietly()
        if self.usable:
            self._rd.flush(5)

