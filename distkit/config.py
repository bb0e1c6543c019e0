"""Settings read from the environment, passed explicitly to whatever needs them (no globals).

>>> s = Settings.from_env({"DISTKIT_REDIS_URL": "redis://127.0.0.1:6379/0"})
>>> s.redis_url
'redis://127.0.0.1:6379/0'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distkit.errors import ConfigError

if TYPE_CHECKING:  # heavy clients are imported only when used
    import redis
    from redis.asyncio import Redis as AsyncRedis
    from redis.cluster import RedisCluster
    from sqlalchemy.engine import Engine

ENV_REDIS_URL = "DISTKIT_REDIS_URL"
ENV_REDIS_CLUSTER_NODES = "DISTKIT_REDIS_CLUSTER_NODES"
ENV_DATABASE_URL = "DISTKIT_DATABASE_URL"
ENV_KAFKA_BOOTSTRAP = "DISTKIT_KAFKA_BOOTSTRAP"


def _parse_nodes(raw: str) -> tuple[tuple[str, int], ...]:
    nodes = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"{ENV_REDIS_CLUSTER_NODES}: expected host:port[,host:port...], got {part!r}")
        nodes.append((host, int(port)))
    return tuple(nodes)


@dataclass(frozen=True)
class Settings:
    """Where distkit's backing services are. Every field is optional; a missing one raises only when used."""

    redis_url: str | None = None
    redis_cluster_nodes: tuple[tuple[str, int], ...] = field(default=())
    database_url: str | None = None
    kafka_bootstrap: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``DISTKIT_REDIS_URL``, ``DISTKIT_REDIS_CLUSTER_NODES`` (``host:port,...``),
        ``DISTKIT_DATABASE_URL`` (a SQLAlchemy URL) and ``DISTKIT_KAFKA_BOOTSTRAP``."""
        env = os.environ if environ is None else environ
        return cls(
            redis_url=env.get(ENV_REDIS_URL) or None,
            redis_cluster_nodes=_parse_nodes(env.get(ENV_REDIS_CLUSTER_NODES, "")),
            database_url=env.get(ENV_DATABASE_URL) or None,
            kafka_bootstrap=env.get(ENV_KAFKA_BOOTSTRAP) or None,
        )

    def _need(self, value: Any, env: str) -> Any:
        if not value:
            raise ConfigError(f"{env} is not set; export it or pass the setting explicitly")
        return value

    def redis(self, **kwargs: Any) -> redis.Redis:
        """A synchronous redis-py client for :attr:`redis_url`."""
        import redis as redis_mod

        return redis_mod.Redis.from_url(self._need(self.redis_url, ENV_REDIS_URL), **kwargs)

    def async_redis(self, **kwargs: Any) -> AsyncRedis:
        """An asyncio redis-py client for :attr:`redis_url`."""
        import redis.asyncio as aredis

        return aredis.Redis.from_url(self._need(self.redis_url, ENV_REDIS_URL), **kwargs)

    def redis_cluster(self, **kwargs: Any) -> RedisCluster:
        """A redis-py cluster client for :attr:`redis_cluster_nodes`."""
        from redis.cluster import ClusterNode
        from redis.cluster import RedisCluster as _RedisCluster

        nodes = self._need(self.redis_cluster_nodes, ENV_REDIS_CLUSTER_NODES)
        startup = [ClusterNode(h, p) for h, p in nodes]  # type: ignore[no-untyped-call]
        return _RedisCluster(startup_nodes=startup, **kwargs)

    def sql_engine(self, **kwargs: Any) -> Engine:
        """A SQLAlchemy engine for :attr:`database_url`."""
        from sqlalchemy import create_engine

        return create_engine(self._need(self.database_url, ENV_DATABASE_URL), **kwargs)
