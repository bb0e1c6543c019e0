"""Consume-transform-produce with exactly-once effects inside Kafka (EOS).

For each batch: begin a transaction, run the handler on every input, send its outputs, commit the input
offsets *in the same transaction*, commit. Either the outputs and the offset move become visible
together or neither does, so a crash or an abort re-delivers the inputs and no output is duplicated for
``read_committed`` readers.

A handler that raises aborts the transaction and rewinds the consumer; the failing message is retried
with exponential backoff and, after ``max_attempts``, written to ``<topic>.DLT`` with the original
headers plus error headers, and its offset moves on. The processor never holds a transaction open across
a poll, so a rebalance (which only happens inside poll) never strands half-done work.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from distkit.errors import InvalidArgumentError, ProducerFencedError, TransactionAbortedError
from distkit.messaging.broker import Broker, Consumer, TopicPartition, TransactionalProducer
from distkit.messaging.message import Message

log = logging.getLogger(__name__)

Handler = Callable[[Message], Iterable[Message] | None]

DLT_HEADERS = (
    "dlt-error",
    "dlt-error-type",
    "dlt-attempts",
    "dlt-original-topic",
    "dlt-original-partition",
    "dlt-original-offset",
)


@dataclass
class ProcessorStats:
    """What one :meth:`TransactionalProcessor.run` did."""

    processed: int = 0
    transactions: int = 0
    aborted: int = 0
    retries: int = 0
    dead_lettered: int = 0


class _HandlerFailed(Exception):
    def __init__(self, message: Message, error: BaseException) -> None:
        super().__init__(str(error))
        self.message, self.error = message, error


def _ident(msg: Message) -> tuple[str, int, int]:
    return (msg.topic, msg.partition or 0, msg.offset or 0)


def next_offsets(batch: Iterable[Message]) -> dict[TopicPartition, int]:
    """The offsets to commit after ``batch``: per partition, the highest offset + 1."""
    out: dict[TopicPartition, int] = {}
    for m in batch:
        assert m.partition is not None and m.offset is not None
        tp = (m.topic, m.partition)
        out[tp] = max(out.get(tp, 0), m.offset + 1)
    return out


def first_offsets(batch: Iterable[Message]) -> dict[TopicPartition, int]:
    """Where to rewind to re-read ``batch``: per partition, the lowest offset."""
    out: dict[TopicPartition, int] = {}
    for m in batch:
        assert m.partition is not None and m.offset is not None
        tp = (m.topic, m.partition)
        out[tp] = min(out.get(tp, m.offset), m.offset)
    return out


def dead_letter(msg: Message, error: BaseException, attempts: int, suffix: str) -> Message:
    """The DLT record for ``msg``: same key and value, original headers plus ``dlt-*`` error headers."""
    headers = dict(msg.headers)
    headers.update(
        {
            "dlt-error": str(error)[:1000],
            "dlt-error-type": type(error).__qualname__,
            "dlt-attempts": str(attempts),
            "dlt-original-topic": msg.topic,
            "dlt-original-partition": str(msg.partition),
            "dlt-original-offset": str(msg.offset),
        }
    )
    return Message(topic=f"{msg.topic}{suffix}", key=msg.key, value=msg.value, headers=headers)


class TransactionalProcessor:
    """Runs ``handler`` over ``input_topics`` with exactly-once output (see module docs).

    >>> proc = TransactionalProcessor(broker, group_id="stock", input_topics=["orders"],   # doctest: +SKIP
    ...     transactional_id="stock-1", handler=lambda m: [Message("stock-events", m.value, key=m.key)])
    >>> proc.run(max_messages=100)                                                        # doctest: +SKIP
    """

    def __init__(
        self,
        broker: Broker,
        group_id: str,
        input_topics: list[str],
        transactional_id: str,
        handler: Handler,
        *,
        max_attempts: int = 3,
        backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        batch_size: int = 100,
        poll_timeout_s: float = 0.2,
        dlt_suffix: str = ".DLT",
        auto_offset_reset: str = "earliest",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise InvalidArgumentError(f"max_attempts must be >= 1, got {max_attempts}")
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
        self.broker = broker
        self.group_id = group_id
        self.input_topics = list(input_topics)
        self.transactional_id = transactional_id
        self.handler = handler
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.dlt_suffix = dlt_suffix
        self.auto_offset_reset = auto_offset_reset
        self._sleep = sleep
        self._stop = threading.Event()
        self._failures: dict[tuple[str, int, int], tuple[int, BaseException]] = {}
        self.consumer: Consumer | None = None
        self.producer: TransactionalProducer | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current transaction (thread- and signal-safe)."""
        self._stop.set()

    def _start(self) -> tuple[Consumer, TransactionalProducer]:
        if self.producer is None:
            self.producer = self.broker.transactional_producer(self.transactional_id)
        if self.consumer is None:
            self.consumer = self.broker.consumer(
                self.group_id, self.input_topics, auto_offset_reset=self.auto_offset_reset
            )
        return self.consumer, self.producer

    def close(self) -> None:
        """Leave the group (partitions move to other members). The producer belongs to the broker."""
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None

    def run(
        self,
        max_messages: int | None = None,
        stop_event: threading.Event | None = None,
        *,
        idle_timeout_s: float | None = None,
        handle_signals: bool = True,
    ) -> ProcessorStats:
        """Process until ``max_messages`` inputs are done, ``stop_event``/:meth:`stop`, SIGTERM/SIGINT (when
        ``handle_signals`` and on the main thread), or ``idle_timeout_s`` without input once assigned.

        The current transaction always finishes (commit, or abort on error) before returning. Raises
        :class:`~distkit.errors.ProducerFencedError` if a newer instance took over the transactional id.
        """
        stats = ProcessorStats()
        restore = self._install_signals() if handle_signals else {}
        consumer, producer = self._start()
        single_left = 0  # after a failure, go one message per transaction through the failed batch
        idle_since: float | None = None
        try:
            while not self._stop.is_set() and not (stop_event is not None and stop_event.is_set()):
                want = 1 if single_left else self.batch_size
                if max_messages is not None:
                    if stats.processed >= max_messages:
                        break
                    want = min(want, max_messages - stats.processed)
                batch = consumer.poll_batch(want, self.poll_timeout_s)
                if not batch:
                    if idle_timeout_s is not None and consumer.assignment():
                        idle_since = idle_since or time.monotonic()
                        if time.monotonic() - idle_since >= idle_timeout_s:
                            break
                    continue
                idle_since = None
                single_left = max(0, single_left - len(batch))
                try:
                    stats.dead_lettered += self._process(consumer, producer, batch)
                    stats.processed += len(batch)
                    stats.transactions += 1
                except _HandlerFailed as failed:
                    stats.aborted += 1
                    self._rewind(consumer, batch)
                    if len(batch) > 1:
                        single_left = len(batch)
                    self._record_failure(failed, stats)
                except TransactionAbortedError as exc:
                    log.warning("transaction of %s aborted (%s); re-processing the batch", self.transactional_id, exc)
                    stats.aborted += 1
                    self._rewind(consumer, batch)
        except ProducerFencedError:
            log.error("processor %s was fenced by a newer instance; stopping", self.transactional_id)
            raise
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)
        return stats

    def _process(self, consumer: Consumer, producer: TransactionalProducer, batch: list[Message]) -> int:
        """One transaction over ``batch``; returns how many inputs went to the dead-letter topic."""
        dead = 0
        producer.begin()
        try:
            for msg in batch:
                failure = self._failures.get(_ident(msg))
                if failure is not None and failure[0] >= self.max_attempts:
                    outputs = [dead_letter(msg, failure[1], failure[0], self.dlt_suffix)]
                    dead += 1
                else:
                    try:
                        outputs = list(self.handler(msg) or ())
                    except Exception as exc:
                        raise _HandlerFailed(msg, exc) from exc
                for out in outputs:
                    producer.send(out.topic, out.value, key=out.key, headers=out.headers, partition=out.partition)
            producer.send_offsets(consumer, next_offsets(batch))
        except BaseException:
            if getattr(producer, "in_transaction", True):
                producer.abort()
            raise
        producer.commit()
        for msg in batch:
            self._failures.pop(_ident(msg), None)
        return dead

    def _rewind(self, consumer: Consumer, batch: list[Message]) -> None:
        for (topic, partition), offset in first_offsets(batch).items():
            consumer.seek(topic, partition, offset)

    def _record_failure(self, failed: _HandlerFailed, stats: ProcessorStats) -> None:
        """Count the attempt; back off before a retry. At ``max_attempts`` the next pass dead-letters it
        (DLT record + offset in one transaction, so it is parked exactly once)."""
        msg = failed.message
        attempts = self._failures.get(_ident(msg), (0, failed.error))[0] + 1
        self._failures[_ident(msg)] = (attempts, failed.error)
        if attempts < self.max_attempts:
            stats.retries += 1
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempts - 1))
            log.warning(
                "handler failed on %s[%s]@%s (attempt %d/%d): %r; retrying in %.2fs",
                msg.topic,
                msg.partition,
                msg.offset,
                attempts,
                self.max_attempts,
                failed.error,
                delay,
            )
            self._sleep(delay)
        else:
            log.error(
                "handler failed on %s[%s]@%s %d times: %r; sending it to %s%s",
                msg.topic,
                msg.partition,
                msg.offset,
                attempts,
                failed.error,
                msg.topic,
                self.dlt_suffix,
            )

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: finishing the current transaction and stopping", signum)
            self._stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
        return previous
