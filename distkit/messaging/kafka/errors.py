"""librdkafka errors mapped onto distkit's: fenced, aborted, unavailable, unknown topic."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException

from distkit.errors import (
    BrokerUnavailableError,
    CommitFailedError,
    InvalidTopicError,
    MessageTooLargeError,
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
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError._MSG_TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
    }
)
STALE_MEMBER_CODES = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.FENCED_INSTANCE_ID,
        KafkaError.STALE_MEMBER_EPOCH,
        KafkaError._ASSIGNMENT_LOST,
    }
)
UNKNOWN_TOPIC_CODES = frozenset({KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART})


def kafka_error(exc: BaseException) -> Any:
    """The ``KafkaError`` inside a ``KafkaException`` (or ``None``)."""
    return exc.args[0] if isinstance(exc, KafkaException) and exc.args else None


def translate(exc: KafkaException, what: str) -> MessagingError:
    """The distkit error for a failed ``what`` (e.g. ``"commit of transaction order-svc-1"``)."""
    return translate_error(kafka_error(exc), what, str(exc))


def translate_error(err: Any, what: str, fallback: str = "") -> MessagingError:
    """Like :func:`translate`, for a bare ``KafkaError`` (a delivery report's)."""
    code = err.code() if err is not None else None
    detail = err.str() if err is not None else fallback
    if code in FENCED_CODES:
        return ProducerFencedError(
            f"{what} failed: fenced by a newer producer with the same transactional.id ({detail}); stop this instance"
        )
    if err is not None and err.txn_requires_abort():
        return TransactionAbortedError(f"{what} failed and the transaction was aborted: {detail}")
    if code in UNKNOWN_TOPIC_CODES:
        return UnknownTopicError(f"{what} failed: {detail}")
    if code == KafkaError.TOPIC_EXCEPTION:
        return InvalidTopicError(f"{what} failed: invalid topic ({detail})")
    if code in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE):
        return MessageTooLargeError(f"{what} failed: record over the size limit ({detail})")
    if code in STALE_MEMBER_CODES:
        return CommitFailedError(f"{what} failed: the group moved on (rebalance); re-read and retry ({detail})")
    if code in UNAVAILABLE_CODES:
        return BrokerUnavailableError(f"{what} failed: broker unavailable ({detail})")
    return MessagingError(f"{what} failed: {detail}")
