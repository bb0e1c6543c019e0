"""Where an example's servers come from: real ones when ``DISTKIT_*`` is set, embedded stand-ins otherwise.

Every app takes a :class:`Wiring` and never asks which kind it got, so the same code runs in ``make demo``
(fakeredis with Lua, :class:`~distkit.messaging.InMemoryBroker`, SQLite) and in ``make test`` (the real Redis,
Kafka and PostgreSQL that ``infra/services.py`` starts). Each run gets its own :attr:`Wiring.namespace`, used
for Redis keys, Kafka topics and table names, so runs never see each other's data.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from distkit.config import Settings
from distkit.messaging import Broker, InMemoryBroker

if TYPE_CHECKING:
    import redis
    from redis.asyncio import Redis as AsyncRedis
    from sqlalchemy.engine import Engine


@dataclass
class Wiring:
    """The servers one example run talks to, built by :meth:`from_env` (or by a test's fixtures)."""

    redis: redis.Redis
    broker: Broker
    engine: Engine
    namespace: str = field(default_factory=lambda: f"demo{uuid.uuid4().hex[:6]}")
    embedded: bool = True
    settings: Settings = field(default_factory=Settings)
    _closers: list[Callable[[], object]] = field(default_factory=list, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Wiring:
        """Real servers for each ``DISTKIT_*`` URL that is set; fakeredis / in-memory / SQLite for the rest."""
        settings = Settings.from_env(os.environ if environ is None else environ)
        if settings.redis_url:
            client = settings.redis()
        else:
            import fakeredis

            client = fakeredis.FakeRedis()
        broker: Broker
        if settings.kafka_bootstrap:
            from distkit.messaging.kafka import KafkaBroker

            broker = KafkaBroker(settings.kafka_bootstrap)
        else:
            broker = InMemoryBroker()
        from sqlalchemy import create_engine

        if settings.database_url:
            engine = settings.sql_engine(pool_size=20, max_overflow=0)
        else:
            path = os.path.join(tempfile.mkdtemp(prefix="distkit-demo-"), "demo.db")
            engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})
        embedded = not (settings.redis_url or settings.kafka_bootstrap or settings.database_url)
        return cls(redis=client, broker=broker, engine=engine, embedded=embedded, settings=settings)

    def async_redis(self) -> AsyncRedis:
        """An asyncio client for the same Redis (a fakeredis one shares the sync client's data)."""
        if self.settings.redis_url:
            client = self.settings.async_redis()
        else:
            import fakeredis

            server = self.redis.connection_pool.connection_kwargs["server"]
            client = fakeredis.FakeAsyncRedis(server=server)
        return client

    def topic(self, name: str) -> str:
        """This run's name for a Kafka topic (created with 2 partitions where the broker supports it)."""
        return f"{self.namespace}.{name}"

    def table(self, name: str) -> str:
        """This run's name for a SQL table."""
        return f"{self.namespace}_{name}"

    def close(self) -> None:
        """Close what :meth:`from_env` opened (tests close their own clients)."""
        for c in self._closers:
            c()
        self.redis.close()
        self.engine.dispose()
        self.broker.close()
