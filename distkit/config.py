"""Settings read from the environment, passed explicitly to whatever needs them (no globals).

>>> s = Settings.from_env({"DISTKIT_REDIS_URL": "redis://127.0.0.1:6379/0"})
>>> s.redis_url
'redis://127.0.0.1:6379/0'

Printing settings never shows a password (``repr``, ``str``, f-strings, error messages):

>>> Settings(redis_url="redis://app:s3cr%40t@cache:6379/0")
Settings(redis_url='redis://app:***@cache:6379/0', redis_cluster_nodes=(), database_url=None, kafka_bootstrap=None)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distkit._extras import MissingExtraError, extra_for
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


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# query parameters that carry a secret (redis-py and libpq both accept ``?password=...``)
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:password|passwd|pwd|pass|secret|token|sslpassword|sasl[._]password|api[_-]?key)=)[^&;#]*"
)


def redact(url: str) -> str:
    """``url`` with its password (and any ``?password=`` style parameter) replaced by ``***``.

    ``redis://app:s3cret@host:6379/0`` -> ``redis://app:***@host:6379/0``. The credentials are taken to end
    at the *last* ``@``, as redis-py and urllib read them, so a password with a raw ``@``, ``:`` or ``/`` is
    still hidden whole; when in doubt more is hidden, never less.
    """
    m = _SCHEME.match(url)
    scheme, rest = (url[: m.end()], url[m.end() :]) if m else ("", url)
    userinfo, at, host = rest.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        rest = f"{user}:***@{host}" if colon else f"{user}@{host}"
    return scheme + _SECRET_PARAM.sub(r"\1***", rest)


def _parse_nodes(raw: str) -> tuple[tuple[str, int], ...]:
    """``host:port,...``. A bad entry is named by its position and what is wrong with it; its text is never echoed
    (it may hold a password, or a piece of one that a comma split off)."""
    nodes = []
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    for i, part in enumerate(parts, 1):
        host, sep, port = part.rpartition(":")
        reason = None
        if "@" in part or "/" in part or "?" in part or "#" in part:
            reason = "a URL or credentials; give host:port only and pass a password as redis_cluster(password=...)"
        elif not sep or not host:
            reason = "no host:port"
        elif not port.isdigit():
            reason = "the port is not a number"
        if reason is not None:
            raise ConfigError(
                f"{ENV_REDIS_CLUSTER_NODES}: entry {i} of {len(parts)} is not host:port: {reason} "
                "(expected host:port[,host:port...]; the entry is not shown, it may hold a secret)"
            )
        nodes.append((host, int(port)))
    return tuple(nodes)


@contextmanager
def _extra(what: str) -> Iterator[None]:
    """Turn a missing client library into ``ImportError: ... pip install 'distkit[<extra>]'``."""
    try:
        yield
    except ImportError as exc:
        extra = extra_for(exc)
        if extra is None:
            raise
        raise MissingExtraError(what, extra) from exc


@dataclass(frozen=True)
class Settings:
    """Where distkit's backing services are. Every field is optional; a missing one raises only when used."""

    redis_url: str | None = None
    redis_cluster_nodes: tuple[tuple[str, int], ...] = field(default=())
    database_url: str | None = None
    kafka_bootstrap: str | None = None

    def __repr__(self) -> str:
        """Like the dataclass repr, with passwords in URLs replaced by ``***`` (``str()`` and f-strings too)."""
        fields = (
            f"redis_url={_redacted(self.redis_url)!r}",
            f"redis_cluster_nodes={self.redis_cluster_nodes!r}",
            f"database_url={_redacted(self.database_url)!r}",
            f"kafka_bootstrap={_redacted(self.kafka_bootstrap)!r}",
        )
        return f"{type(self).__name__}({', '.join(fields)})"

    __str__ = __repr__

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
        with _extra("Settings.redis()"):
            import redis as redis_mod

        return redis_mod.Redis.from_url(self._need(self.redis_url, ENV_REDIS_URL), **kwargs)

    def async_redis(self, **kwargs: Any) -> AsyncRedis:
        """An asyncio redis-py client for :attr:`redis_url`."""
        with _extra("Settings.async_redis()"):
            import redis.asyncio as aredis

        return aredis.Redis.from_url(self._need(self.redis_url, ENV_REDIS_URL), **kwargs)

    def redis_cluster(self, **kwargs: Any) -> RedisCluster:
        """A redis-py cluster client for :attr:`redis_cluster_nodes`."""
        with _extra("Settings.redis_cluster()"):
            from redis.cluster import ClusterNode
            from redis.cluster import RedisCluster as _RedisCluster

        nodes = self._need(self.redis_cluster_nodes, ENV_REDIS_CLUSTER_NODES)
        startup = [ClusterNode(h, p) for h, p in nodes]  # type: ignore[no-untyped-call]
        return _RedisCluster(startup_nodes=startup, **kwargs)

    def sql_engine(self, **kwargs: Any) -> Engine:
        """A SQLAlchemy engine for :attr:`database_url`."""
        url = self._need(self.database_url, ENV_DATABASE_URL)
        with _extra("Settings.sql_engine()"):
            from sqlalchemy import create_engine

            return create_engine(url, **kwargs)


def _redacted(url: str | None) -> str | None:
    return None if url is None else redact(url)
