"""librdkafka errors mapped onto distkit's: fenced, aborted, unavailable, unknown topic."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException

from distkit.errors import (
    BrokerUnavailableError,
    MessagingError,
    ProducerFencedError,
    TransactionAbortedError,
    UnknownTopicError,
)

FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})
UNAVAILABLE_CODES = frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)
UNKNOWN_TOPIC_CODES = frozenset({KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART})


def kafka_error(exc: BaseException) -> Any:
    """The ``KafkaError`` inside a ``KafkaException`` (or ``None``)."""
    return exc.args[0] if isinstance(exc, KafkaException) and exc.args else None


def translate(exc: KafkaException, what: str) -> MessagingError:
    """The distkit error for a failed ``what`` (e.g. ``"commit of transaction order-svc-1"``)."""
    err = kafka_error(exc)
    code = err.code() if err is not None else None
    detail = err.str() if err is not None else str(exc)
    if code in FENCED_CODES:
        return ProducerFencedError(
            f"{what} failed: fenced by a newer producer with the same transactional.id ({detail}); stop this instance"
        )
    if err is not None and err.txn_requires_abort():
        return TransactionAbortedError(f"{what} failed and the transaction was aborted: {detail}")
    if code in UNKNOWN_TOPIC_CODES:
        return UnknownTopicError(f"{what} failed: {detail}")
    if code in UNAVAILABLE_CODES:
        return BrokerUnavailableError(f"{what} failed: broker unavailable ({detail})")
    return MessagingError(f"{what} failed: {detail}")
