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


class InvalidRollbackPolicyError(IdGenError, InvalidArgumentError):
    """``rollback=`` is not a :class:`~distkit.idgen.RollbackPolicy`."""


class InvalidTimeLimitError(IdGenError, InvalidArgumentError):
    """``max_rollback_wait_ms`` / ``max_ahead_ms`` is not an int >= 0."""


class InvalidCountError(IdGenError, InvalidArgumentError):
    """``next_ids(n)`` with ``n`` that is not an int >= 0."""


class InvalidIdError(IdGenError, InvalidArgumentError):
    """A value to decode that is not a non-negative 63-bit int (``bool`` included: ``True`` is not an id)."""


class InvalidLeaseConfigError(IdGenError, InvalidArgumentError):
    """A worker-id lease built with an empty namespace, a ttl <= 0 or a bad ``max_worker_id``."""


class GeneratorClosedError(IdGenError):
    """``next_id`` on a generator after ``close()`` (also in a child forked after the close)."""


class ChildWorkerLeaseError(WorkerLeaseLostError):
    """A forked child could not lease a worker id of its own; its generator refuses every id (cause chained)."""


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


class LocksClosedError(LockError):
    """The ``Locks`` / ``AsyncLocks`` factory was closed (also raised in ``acquire`` calls blocked at that time)."""


class LockConfigConflictError(LockError, InvalidArgumentError):
    """Redis holds this name with another configuration (semaphore permits, ``prefer_writers``, or another kind
    of lock object): use one configuration per name everywhere."""


# --------------------------------------------------------------------------- ratelimit


class RateLimitError(DistkitError):
    """Base class of :mod:`distkit.ratelimit` errors."""


class InvalidRateError(RateLimitError, InvalidArgumentError):
    """A rate, burst, capacity or cost that cannot work (zero period, negative cost, cost > capacity)."""


class RateLimitUsageError(RateLimitError, InvalidArgumentError, TypeError):
    """A limiter used the wrong way, e.g. a decision of a limiter on an async backend read without ``await``."""


class RateLimitBackendError(RateLimitError):
    """The backend answered with an error that is not an outage (``WRONGTYPE`` on the limiter's key, a script
    error, a corrupt stored value). Never handled by the failure policy: the limiter's state needs fixing.
    In ``acquire_many`` it affects only its own key: ``decisions`` holds every other key's decision (``None``
    at failed positions) and ``errors`` maps each failed position to its error."""

    def __init__(
        self, message: str, *, decisions: list[Any] | None = None, errors: dict[int, BaseException] | None = None
    ) -> None:
        super().__init__(message)
        self.decisions = decisions
        self.errors = errors or {}


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
    """The idempotency store could not be read or written. ``result`` holds the handler's value when the
    handler had already run (the store failed while saving its result)."""


class IdempotencyKeyError(IdempotencyError, InvalidArgumentError):
    """The idempotency key is missing, empty, or one the store cannot hold (too long, NUL character)."""


class IdempotencyStoredFailureError(IdempotencyError):
    """A failure stored by ``store_exceptions`` that cannot be rebuilt as its own type on replay.

    Carries the original: ``error_type`` (``module:qualname``), ``error_message`` and ``error_args``."""

    def __init__(
        self, message: str, *, error_type: str = "", error_message: str = "", error_args: tuple[Any, ...] = ()
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.error_message = error_message
        self.error_args = error_args


class CodecError(DistkitError, ValueError):
    """A value cannot be encoded or decoded by the codec (never silently pickled)."""


class IdempotencyUnstorableResultError(IdempotencyError, CodecError):
    """The handler ran once but its result could not be encoded, so a duplicate cannot get it back.

    The first caller gets it with ``result`` (the value the handler returned); duplicates get it without
    running the handler again. Return a type the codec supports, or pass another codec."""


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


class SagaOwnershipLostError(SagaError):
    """Another coordinator took the saga over (this one's lease ran out); this one stops driving it."""


class SagaBusyError(SagaError):
    """The saga id is being driven by another live coordinator; ask its status or resume it later."""


class SagaDefinitionError(SagaError, InvalidArgumentError):
    """A saga id's record names a saga (or steps) this coordinator does not know; register the definition."""


# --------------------------------------------------------------------------- tracing


class TracingError(DistkitError):
    """Base class of :mod:`distkit.tracing` errors."""


class ShardNotSelectedError(TracingError, LookupError):
    """The request context names no shard (and no default is set), or names one the router doesn't know."""


# --------------------------------------------------------------------------- gateway


class GatewayError(DistkitError):
    """Base class of :mod:`distkit.gateway` errors."""


class InvalidTokenError(GatewayError):
    """A JWT was rejected. Subclasses say why; the message never contains the token."""


class MalformedTokenError(InvalidTokenError):
    """Not a JWT (bad segments, base64 or JSON)."""


class DisallowedAlgorithmError(InvalidTokenError):
    """The token's ``alg`` is not one the verifier pins (``none``, or HS256 where RS256 is expected...)."""


class UnknownKeyError(InvalidTokenError):
    """No verification key for the token's ``kid`` (also after refreshing the JWKS)."""


class BadSignatureError(InvalidTokenError):
    """The signature does not verify with the key for its ``kid``."""


class TokenExpiredError(InvalidTokenError):
    """``exp`` is in the past (beyond the leeway)."""


class TokenNotYetValidError(InvalidTokenError):
    """``nbf`` / ``iat`` is in the future (beyond the leeway)."""


class BadAudienceError(InvalidTokenError):
    """``aud`` does not name this verifier's audience."""


class BadIssuerError(InvalidTokenError):
    """``iss`` is not this verifier's issuer."""


class MissingClaimError(InvalidTokenError):
    """A required claim (``exp`` always) is absent."""


class NoInstanceError(GatewayError):
    """No live instance of the service (none registered, all expired or all ejected)."""


# --------------------------------------------------------------------------- stock


class StockError(DistkitError):
    """Base class of :mod:`distkit.stock` errors."""


class StockNotLoadedError(StockError, LookupError):
    """No stock was loaded for this SKU (``load()`` it first); never treated as "sold out"."""
# --------------------------------------------------------------------------- resilience


class ResilienceError(DistkitError):
    """Base class of :mod:`distkit.resilience` errors."""


class InvalidBreakerConfigError(ResilienceError, InvalidArgumentError):
    """A circuit breaker or bulkhead setting that cannot work (a rate outside (0, 1], a window shorter than a
    bucket, zero probes)."""


class BreakerOpenError(ResilienceError):
    """The circuit breaker is OPEN (or HALF_OPEN with every probe taken): the call was not made.

    ``retry_after_s`` is how long until the breaker lets probes through (0 when HALF_OPEN)."""

    def __init__(self, name: str, state: str, retry_after_s: float) -> None:
        super().__init__(
            f"circuit breaker {name!r} is {state}; the call was not made, retry after {retry_after_s:.3f} s "
            "or serve a fallback (distkit.resilience.degrade)"
        )
        self.name = name
        self.state = state
        self.retry_after_s = retry_after_s


class BulkheadFullError(ResilienceError):
    """Every slot of the bulkhead stayed taken for ``max_wait_s``: the call was not made."""

    def __init__(self, name: str, max_concurrent: int, waited_s: float) -> None:
        super().__init__(
            f"bulkhead {name!r} is full ({max_concurrent} calls in flight) after waiting {waited_s:.3f} s; "
            "retry later, raise max_concurrent, or serve a fallback (distkit.resilience.degrade)"
        )
        self.name = name
        self.max_concurrent = max_concurrent
        self.waited_s = waited_s
# --------------------------------------------------------------------------- cache


class CacheError(DistkitError):
    """Base class of :mod:`distkit.cache` errors."""


class InvalidCacheConfigError(CacheError, InvalidArgumentError):
    """A :class:`~distkit.cache.HotKeyCache` argument out of range (a negative TTL, a jitter outside [0, 1) ...)."""


class CacheLoadTimeoutError(CacheError, TimeoutError):
    """The loader (here or in the process holding the reload lock) did not produce a value within the hard
    timeout and there was no stale value to serve. Raise ``load_timeout_s``'s hard part or speed up the loader."""


class CacheCodecError(CacheError, ValueError):
    """A value could not be encoded by the cache's codec (JSON by default), or a stored entry could not be decoded.
    Pass JSON-compatible values or a ``codec=`` that handles your type."""
