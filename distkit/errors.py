"""Every public distkit error, grouped by module.

All derive from :class:`DistkitError`, so ``except DistkitError`` catches anything distkit raises on
purpose. Errors about bad input also derive from :class:`ValueError` (via :class:`InvalidArgumentError`),
so code that already guards ``ValueError`` keeps working. Messages say what to do, not only what went
wrong.
"""

from __future__ import annotations

from typing import Any


class DistkitError(Exception):
    """Base class of every error distkit raises on purpose."""


class InvalidArgumentError(DistkitError, ValueError):
    """A caller passed a value distkit cannot use (wrong range, wrong type, wrong combination)."""


class ConfigError(InvalidArgumentError):
    """Configuration (arguments or ``DISTKIT_*`` environment variables) is missing or malformed."""


class BackendUnavailableError(DistkitError):
    """A backing service (Redis, a SQL database, Kafka) could not be reached.

    The original exception is chained as ``__cause__``.
    """


# --------------------------------------------------------------------------- idgen


class IdGenError(DistkitError):
    """Base class of :mod:`distkit.idgen` errors."""


class InvalidLayoutError(IdGenError, InvalidArgumentError):
    """A :class:`~distkit.idgen.Layout` whose bit widths do not add up to 63 (+ sign bit)."""


class InvalidWorkerIdError(IdGenError, InvalidArgumentError):
    """A worker or datacenter id outside the range its layout field can hold."""


class InvalidEpochError(IdGenError, InvalidArgumentError):
    """An epoch in the future, or one the timestamp field cannot reach from now."""


class ClockMovedBackwardsError(IdGenError):
    """The clock went back further than the generator's rollback policy allows."""

    def __init__(self, message: str, *, backwards_ms: int = 0) -> None:
        super().__init__(message)
        self.backwards_ms = backwards_ms


class TimestampExhaustedError(IdGenError):
    """The layout's timestamp field cannot represent the current time any more."""


class WorkerIdExhaustedError(IdGenError):
    """Every worker id of a lease namespace is held by a live process."""


class WorkerLeaseLostError(IdGenError):
    """The worker-id lease expired or was taken: issuing more ids could duplicate another process's."""


class ForkedGeneratorError(IdGenError):
    """A generator with a static worker id was used in a forked child, which would duplicate the parent."""


# --------------------------------------------------------------------------- locks


class LockError(DistkitError):
    """Base class of :mod:`distkit.locks` errors."""


class LockNotOwnedError(LockError):
    """Release or extend by a caller that does not hold the lock."""


class LockUpgradeError(LockError):
    """A read-lock holder asked for the write lock, which would deadlock against itself."""


class LockLostError(LockError):
    """The lock's key expired or was removed while the owner believed it held the lock."""


class LockTimeoutError(LockError):
    """``acquire`` with a timeout, used as a context manager, did not get the lock in time."""


# --------------------------------------------------------------------------- ratelimit


class RateLimitError(DistkitError):
    """Base class of :mod:`distkit.ratelimit` errors."""


class InvalidRateError(RateLimitError, InvalidArgumentError):
    """A rate, burst, capacity or cost that cannot work (zero period, negative cost, cost > capacity)."""


class RateLimitExceeded(RateLimitError):
    """The request is over the limit; ``decision`` carries retry-after and the header values."""

    def __init__(self, decision: Any, message: str | None = None) -> None:
        retry = getattr(decision, "retry_after_s", None)
        if message is None:
            message = "rate limit exceeded"
            if retry is not None:
                message += f"; retry after {retry:.3f} s"
        super().__init__(message)
        self.decision = decision


# --------------------------------------------------------------------------- idempotency


class IdempotencyError(DistkitError):
    """Base class of :mod:`distkit.idempotency` errors."""


class IdempotencyInProgressError(IdempotencyError):
    """Another caller is processing the same key right now; retry later (or pass ``wait_s``)."""


class IdempotencyKeyMismatchError(IdempotencyError):
    """The key was used before with a different payload: a client bug, never a duplicate."""


class IdempotencyClaimLostError(IdempotencyError):
    """This run's in-progress claim expired and another caller reclaimed the key; its result was not stored."""


class IdempotencyStoreError(IdempotencyError, BackendUnavailableError):
    """The idempotency store could not be read or written."""


class CodecError(DistkitError, ValueError):
    """A value cannot be encoded or decoded by the codec (never silently pickled)."""


# --------------------------------------------------------------------------- messaging


class MessagingError(DistkitError):
    """Base class of :mod:`distkit.messaging` errors."""


class BrokerUnavailableError(MessagingError, BackendUnavailableError):
    """The broker did not answer within the bounded wait."""


class SerializationError(MessagingError, CodecError):
    """A message value or key could not be serialised; nothing was sent."""


class UnknownTopicError(MessagingError):
    """The topic does not exist and the broker does not auto-create topics."""


class ProducerFencedError(MessagingError):
    """A newer producer with the same ``transactional_id`` took over; this one must stop (zombie fencing)."""


class TransactionAbortedError(MessagingError):
    """The transaction was aborted; none of its messages or offsets became visible."""


class InvalidTopicError(MessagingError, InvalidArgumentError):
    """A topic name Kafka refuses (``[a-zA-Z0-9._-]``, 1-249 characters, not ``.``/``..``)."""


class MessageTooLargeError(MessagingError, InvalidArgumentError):
    """A record over the producer's ``message.max.bytes`` (1 MB by default); it was not sent."""


class CommitFailedError(MessagingError):
    """An offset commit from a consumer the group has moved past (rebalance, stale generation); re-read."""


# --------------------------------------------------------------------------- saga


class SagaError(DistkitError):
    """Base class of :mod:`distkit.saga` errors."""


class SagaCompensationError(SagaError):
    """A compensation step kept failing; the saga needs an operator."""


class SagaTimeoutError(SagaError):
    """A saga step did not finish within its timeout."""
