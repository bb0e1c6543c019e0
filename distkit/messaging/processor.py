"""Consume-transform-produce with exactly-once effects inside Kafka (EOS).

For each batch: begin a transaction, run the handler on every input, send its outputs, commit the input
offsets *in the same transaction*, commit. Either the outputs and the offset move become visible
together or neither does, so a crash or an abort re-delivers the inputs and no output is duplicated for
``read_committed`` readers.

A handler that raises aborts the transaction and rewinds the consumer; the failing message is retried
with jittered exponential backoff and, after ``max_attempts`` (at once for a ``not_retryable`` exception),
written to ``<topic>.DLT`` -- the original key, value *bytes* (a tombstone stays a tombstone) and headers,
plus ``dlt-*`` error headers -- and its offset moves on, as Spring Kafka's ``DeadLetterPublishingRecoverer``
does. The processor never holds a transaction open across a poll, so a rebalance (which only happens inside
poll) never strands half-done work.

Every other way out of a transaction (``send``, ``send_offsets`` or ``commit`` failing, the broker going
away, an exception from anywhere) aborts it and rewinds the consumer to the group's *committed* offsets,
asked from the broker -- so a commit whose outcome is unknown is neither lost nor repeated, and calling
:meth:`~TransactionalProcessor.run` again never commits past an input whose outputs were not committed.
Broker errors are ridden out: the producer is replaced when it can no longer be trusted (a new
``init_transactions`` fences the old instance) and the batch is re-read, with backoff, for up to
``outage_timeout_s``; after that ``run()`` raises :class:`~distkit.errors.BrokerUnavailableError`.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from distkit import _metrics
from distkit.errors import (
    BrokerUnavailableError,
    InvalidArgumentError,
    MessagingError,
    ProducerFencedError,
    SerializationError,
    UnknownTopicError,
)
from distkit.messaging._tracing import traced
from distkit.messaging.broker import Broker, Consumer, TopicPartition, TransactionalProducer
from distkit.messaging.message import Message

log = logging.getLogger(__name__)

_MESSAGES = _metrics.counter("distkit.messaging.processor.messages", "1", "inputs committed (incl. dead-lettered)")
_TXNS = _metrics.counter("distkit.messaging.processor.transactions", "1", "transactions by outcome")
_BATCH = _metrics.histogram("distkit.messaging.processor.batch.size", "1", "inputs per committed transaction")
_RETRIES = _metrics.counter("distkit.messaging.processor.retries", "1", "handler failures that will be retried")
_DEAD = _metrics.counter("distkit.messaging.processor.dead_lettered", "1", "inputs sent to the dead-letter topic")
_LAG = _metrics.gauge("distkit.messaging.consumer.lag", "1",
                      "records between the committed offset and the partition's end, after each transaction")

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
    broker_errors: int = 0  # transactions that failed on the broker side (send/send_offsets/commit) and were re-read
    producers_replaced: int = 0


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
    """The DLT record for ``msg``: same key and value, original headers plus ``dlt-*`` error headers.

    ``raw_value`` carries the original bytes of a consumed message; the processor forwards those unchanged."""
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
    return Message(
        topic=f"{msg.topic}{suffix}", key=msg.key, value=msg.value, headers=headers, raw_value=msg.raw_value
    )


DEFAULT_NOT_RETRYABLE: tuple[type[BaseException], ...] = (SerializationError, InvalidArgumentError)
"""Handler exceptions that go to the DLT on the first failure (the input or the outputs cannot be encoded
or are invalid: a retry cannot succeed), like Spring Kafka's not-retryable defaults."""


class TransactionalProcessor:
    """Runs ``handler`` over ``input_topics`` with exactly-once output (see module docs).

    ``backoff_s``/``max_backoff_s``/``jitter``: the delay before retry ``n`` is ``backoff_s * 2**(n-1)``, capped
    at ``max_backoff_s``, then scaled by a random factor in ``[1 - jitter, 1 + jitter]`` (and capped again).
    ``not_retryable``: exception types dead-lettered on their first failure (subclasses included).
    ``outage_timeout_s``: how long broker errors are retried before :meth:`run` raises
    :class:`~distkit.errors.BrokerUnavailableError`; every broker call is itself bounded by the broker's
    ``timeout_s``, so ``run()`` returns or raises within about ``outage_timeout_s + 3 * timeout_s`` of an
    outage that does not end.

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
        jitter: float = 0.2,
        not_retryable: tuple[type[BaseException], ...] = DEFAULT_NOT_RETRYABLE,
        batch_size: int = 100,
        poll_timeout_s: float = 0.2,
        dlt_suffix: str = ".DLT",
        auto_offset_reset: str = "earliest",
        outage_timeout_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise InvalidArgumentError(f"max_attempts must be >= 1, got {max_attempts}")
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= jitter <= 1:
            raise InvalidArgumentError(f"jitter must be between 0 and 1, got {jitter}")
        if outage_timeout_s < 0:
            raise InvalidArgumentError(f"outage_timeout_s must be >= 0, got {outage_timeout_s}")
        if not isinstance(not_retryable, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in not_retryable
        ):
            raise InvalidArgumentError("not_retryable must be a tuple of exception classes")
        self.broker = broker
        self.group_id = group_id
        self.input_topics = list(input_topics)
        self.transactional_id = transactional_id
        self.handler = traced(handler)  # a consumer span continuing the trace
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.jitter = jitter
        self.not_retryable = not_retryable
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.dlt_suffix = dlt_suffix
        self.auto_offset_reset = auto_offset_reset
        self.outage_timeout_s = outage_timeout_s
        self._sleep = sleep
        self._random = random.Random()
        self._stop = threading.Event()
        self._failures: dict[tuple[str, int, int], tuple[int, BaseException]] = {}
        self._rewind_pending = False  # consumer positions may be past uncommitted inputs: rewind before polling
        self._unsure: dict[TopicPartition, int] = {}  # batch starts of transactions with an unknown outcome
        self.consumer: Consumer | None = None
        self.producer: TransactionalProducer | None = None
        g = group_id  # metric attributes: the consumer group, never a key or an offset
        self._attrs = {"processor": {"group": g}, "committed": {"group": g, "outcome": "committed"},
                       "aborted": {"group": g, "outcome": "aborted"}}

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current transaction (thread- and signal-safe)."""
        self._stop.set()

    @property
    def _call_timeout_s(self) -> float:
        return float(getattr(self.broker, "timeout_s", 10.0))

    def _start(self) -> tuple[Consumer, TransactionalProducer]:
        if self.producer is None:
            self.producer = self.broker.transactional_producer(self.transactional_id)
        if self.consumer is None:
            self.consumer = self.broker.consumer(
                self.group_id, self.input_topics, auto_offset_reset=self.auto_offset_reset
            )
        return self.consumer, self.producer

    def _retire_producer(self, stats: ProcessorStats) -> None:
        """Drop a producer that can no longer be trusted; the next one (a fresh ``init_transactions``)
        fences it and settles whatever transaction the broker still holds for the id."""
        old, self.producer = self.producer, None
        if old is None:
            return
        stats.producers_replaced += 1
        new = getattr(self.broker, "new_transactional_producer", None)
        try:
            old.close()
        except Exception:
            log.debug("closing the retired producer of %s failed", self.transactional_id, exc_info=True)
        if new is not None:
            self.producer = new(self.transactional_id)

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
        :class:`~distkit.errors.ProducerFencedError` if a newer instance took over the transactional id, and
        :class:`~distkit.errors.BrokerUnavailableError` (or the last broker error) once broker errors have
        lasted ``outage_timeout_s``. After any exception, calling ``run()`` again resumes from the committed
        offsets.
        """
        stats = ProcessorStats()
        restore = self._install_signals() if handle_signals else {}
        single_left = 0  # after a failure, go one message per transaction through the failed batch
        idle_since: float | None = None
        outage_since: float | None = None
        try:
            while not self._stop.is_set() and not (stop_event is not None and stop_event.is_set()):
                if max_messages is not None and stats.processed >= max_messages:
                    break
                batch: list[Message] = []
                try:
                    consumer, producer = self._start()
                    if self._rewind_pending:
                        self._rewind_to_committed(consumer)
                    want = 1 if single_left else self.batch_size
                    if max_messages is not None:
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
                    dead = self._process(consumer, producer, batch)
                    stats.dead_lettered += dead
                    stats.processed += len(batch)
                    stats.transactions += 1
                    outage_since = None
                    if _metrics.enabled():
                        try:
                            self._count_committed(consumer, batch, dead)
                        except Exception:  # a metric must never fail a committed transaction
                            log.debug("processor %s: recording metrics failed", self.transactional_id, exc_info=True)
                except _HandlerFailed as failed:
                    stats.aborted += 1
                    _TXNS.add(1, self._attrs["aborted"])
                    if self._abort(batch, stats):
                        self._rewind(batch)  # aborted for sure: re-read from the batch start
                    if len(batch) > 1:
                        single_left = len(batch)
                    self._record_failure(failed, stats)
                except ProducerFencedError:
                    self._mark_unsure(batch)
                    log.error("processor %s was fenced by a newer instance; stopping", self.transactional_id)
                    raise
                except (UnknownTopicError, InvalidArgumentError):
                    if batch:
                        self._abort(batch, stats)
                        self._mark_unsure(batch)
                    raise  # configuration, not an outage: retrying cannot help
                except MessagingError as exc:
                    now = time.monotonic()
                    outage_since = outage_since or now
                    if batch:
                        stats.aborted += 1
                    stats.broker_errors += 1
                    self._abort(batch, stats)
                    self._mark_unsure(batch)
                    if len(batch) > 1 and not isinstance(exc, BrokerUnavailableError):
                        single_left = len(batch)
                    if now - outage_since >= self.outage_timeout_s:
                        log.error("processor %s: broker errors for %.1f s; giving up: %s",
                                  self.transactional_id, now - outage_since, exc)
                        raise
                    delay = self._backoff(stats.broker_errors)
                    log.warning("processor %s: %s; re-reading from the committed offsets in %.2fs",
                                self.transactional_id, exc, delay)
                    self._wait(delay, stop_event)
                except BaseException:
                    if batch:
                        stats.aborted += 1
                    self._abort(batch, stats)
                    self._mark_unsure(batch)
                    raise
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)
        return stats

    def _process(self, consumer: Consumer, producer: TransactionalProducer, batch: list[Message]) -> int:
        """One transaction over ``batch``; returns how many inputs went to the dead-letter topic.
        Exceptions propagate with the transaction still open; :meth:`run` aborts and rewinds."""
        dead = 0
        producer.begin()
        send, send_raw, failures, handler = producer.send, producer.send_raw, self._failures, self.handler
        for msg in batch:
            failure = failures.get(_ident(msg)) if failures else None  # no earlier failure: the common case
            if failure is not None and (failure[0] >= self.max_attempts or self._not_retryable(failure[1])):
                dlt = dead_letter(msg, failure[1], failure[0], self.dlt_suffix)
                if msg.offset is not None:  # consumed: forward the original bytes (None = tombstone)
                    send_raw(dlt.topic, msg.raw_value, key=dlt.key, headers=dlt.headers)
                else:
                    send(dlt.topic, dlt.value, key=dlt.key, headers=dlt.headers)
                dead += 1
                continue
            try:
                outputs = handler(msg) or ()
                if not isinstance(outputs, list | tuple):
                    outputs = list(outputs)
            except Exception as exc:
                raise _HandlerFailed(msg, exc) from exc
            try:
                for out in outputs:
                    send(out.topic, out.value, key=out.key, headers=out.headers, partition=out.partition)
            except (SerializationError, InvalidArgumentError) as exc:
                raise _HandlerFailed(msg, exc) from exc  # this message's outputs are bad: retry/DLT it
        producer.send_offsets(consumer, next_offsets(batch))
        producer.commit()
        if self._failures:
            for msg in batch:
                self._failures.pop(_ident(msg), None)
        return dead

    def _count_committed(self, consumer: Consumer, batch: list[Message], dead: int) -> None:
        """Metrics of one committed transaction, and each of its partitions' lag (end offset - next offset)."""
        attrs = self._attrs["processor"]
        _TXNS.add(1, self._attrs["committed"])
        _MESSAGES.add(len(batch), attrs)
        _BATCH.record(len(batch), attrs)
        if dead:
            _DEAD.add(dead, attrs)
        end_of = getattr(consumer, "high_watermark", None)
        if end_of is None:
            return
        for (topic, partition), next_offset in next_offsets(batch).items():
            end = end_of(topic, partition)
            if end is not None:
                lag_attrs: dict[str, str | int] = {"group": attrs["group"], "topic": topic, "partition": partition}
                _LAG.record(max(0, end - next_offset), lag_attrs)

    def _not_retryable(self, error: BaseException) -> bool:
        return isinstance(error, self.not_retryable)

    def _abort(self, batch: list[Message], stats: ProcessorStats) -> bool:
        """Abort the open transaction, if any; ``True`` if it is certainly aborted. A producer that cannot
        abort is replaced, and the consumer must then rewind to what the broker says was committed."""
        producer = self.producer
        if producer is None:
            return not batch
        if not getattr(producer, "in_transaction", True) and getattr(producer, "usable", True):
            return True  # it aborted itself (a failed commit aborts)
        try:
            if getattr(producer, "in_transaction", True):
                producer.abort()
            if getattr(producer, "usable", True):
                return True
        except ProducerFencedError:
            raise
        except Exception as exc:
            log.warning("processor %s: abort failed (%s); replacing the producer", self.transactional_id, exc)
        self._mark_unsure(batch)
        try:
            self._retire_producer(stats)
        except MessagingError as exc:  # broker still away: the next loop creates it
            log.warning("processor %s: no new producer yet (%s)", self.transactional_id, exc)
            self.producer = None
        return False

    def _mark_unsure(self, batch: list[Message]) -> None:
        for tp, off in first_offsets(batch).items():
            self._unsure[tp] = min(off, self._unsure.get(tp, off))
        self._rewind_pending = True

    def _rewind(self, batch: list[Message]) -> None:
        assert self.consumer is not None
        for (topic, partition), offset in first_offsets(batch).items():
            self.consumer.seek(topic, partition, offset)

    def _rewind_to_committed(self, consumer: Consumer) -> None:
        """Seek every assigned partition (and every partition of an unsure batch) to the committed offset."""
        assigned = set(consumer.assignment())
        tps = sorted(assigned | set(self._unsure))
        committed = consumer.committed(tps, self._call_timeout_s)
        for tp in tps:
            offset = committed.get(tp)
            if offset is None:
                offset = self._unsure.get(tp)  # nothing committed yet: the batch start is the reset position
            if offset is None or tp not in assigned:
                continue  # not ours any more: its next owner starts from the committed offset
            try:
                consumer.seek(tp[0], tp[1], offset)
            except MessagingError:
                if tp in set(consumer.assignment()):
                    raise
        self._unsure.clear()
        self._rewind_pending = False

    def _backoff(self, attempt: int) -> float:
        delay = float(min(self.max_backoff_s, self.backoff_s * 2.0 ** max(0, attempt - 1)))
        if self.jitter:
            delay *= self._random.uniform(1 - self.jitter, 1 + self.jitter)
        return min(self.max_backoff_s, delay)

    def _wait(self, delay: float, stop_event: threading.Event | None) -> None:
        if self._sleep is not time.sleep:
            self._sleep(delay)
            return
        deadline = time.monotonic() + delay
        while not self._stop.is_set() and not (stop_event is not None and stop_event.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, 0.1))

    def _record_failure(self, failed: _HandlerFailed, stats: ProcessorStats) -> None:
        """Count the attempt; back off before a retry. At ``max_attempts`` (or for a not-retryable error) the
        next pass dead-letters it (DLT record + offset in one transaction, so it is parked exactly once)."""
        msg = failed.message
        attempts = self._failures.get(_ident(msg), (0, failed.error))[0] + 1
        self._failures[_ident(msg)] = (attempts, failed.error)
        if attempts < self.max_attempts and not self._not_retryable(failed.error):
            stats.retries += 1
            _RETRIES.add(1, self._attrs["processor"])
            delay = self._backoff(attempts)
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
                "handler failed on %s[%s]@%s (attempt %d, %s): %r; sending it to %s%s",
                msg.topic,
                msg.partition,
                msg.offset,
                attempts,
                "not retryable" if attempts < self.max_attempts else "no attempts left",
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
