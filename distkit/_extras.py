"""Optional dependencies ("extras") and the error that says which one to install.

``pip install distkit`` brings no third-party package: the in-memory parts (``Snowflake``, ``MemoryBackend``,
``InMemoryBroker``, codecs, errors) work as they are. A name that needs a client library raises
:class:`MissingExtraError` (an ``ImportError``) naming the extra::

    ImportError: distkit.locks.Locks needs the 'redis' extra: pip install 'distkit[redis]'
"""

from __future__ import annotations

from distkit.errors import DistkitError

# top-level module of a client library -> the distkit extra that installs it
EXTRA_FOR_MODULE: dict[str, str] = {
    "redis": "redis",
    "confluent_kafka": "kafka",
    "sqlalchemy": "sql",
    "psycopg": "sql",
    "opentelemetry": "otel",
}

EXTRAS: dict[str, str] = {
    "redis": "redis-py: locks, Redis rate limiting, Redis idempotency store, Redis worker-id leases",
    "kafka": "confluent-kafka: KafkaBroker (transactional producer, consumer, exactly-once processor)",
    "sql": "SQLAlchemy 2 + psycopg 3: SQL idempotency store, Inbox, Outbox/OutboxRelay, SQL worker-id leases",
    "otel": "opentelemetry-api: metrics and tracing hooks",
}


class MissingExtraError(DistkitError, ImportError):
    """A distkit name needs an optional dependency that is not installed (an ``ImportError``)."""

    def __init__(self, what: str, extra: str) -> None:
        self.extra = extra
        super().__init__(f"{what} needs the {extra!r} extra: pip install 'distkit[{extra}]'")


def extra_for(exc: ImportError) -> str | None:
    """The extra whose absence caused ``exc`` (a ``ModuleNotFoundError`` for a client library), else None."""
    name = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not name:
        return None
    return EXTRA_FOR_MODULE.get(name.partition(".")[0])


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` unless the client library of ``extra`` can be imported."""
    import importlib.util

    for module, needed_by in EXTRA_FOR_MODULE.items():
        if needed_by == extra and importlib.util.find_spec(module) is None:
            raise MissingExtraError(what, extra)
