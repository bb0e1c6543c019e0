"""Issue 16 §5: protocols for Redis clients that mypy can check, and lint that covers examples and CI."""

from __future__ import annotations

import re
from pathlib import Path

import fakeredis
import pytest
import redis
import redis.asyncio as aredis

from distkit._types import AsyncRedisLike, SyncRedisLike, is_async_client

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = '''
import fakeredis
import redis
import redis.asyncio as aredis
from redis.cluster import RedisCluster

from distkit._types import AsyncRedisLike, RedisLike, SyncRedisLike


def takes_sync(c: SyncRedisLike) -> None: ...
def takes_async(c: AsyncRedisLike) -> None: ...
def takes_any(c: RedisLike) -> None: ...


takes_sync(redis.Redis())
takes_sync(RedisCluster(host="h"))
takes_sync(fakeredis.FakeRedis())
takes_async(aredis.Redis())
takes_async(aredis.RedisCluster(host="h"))
takes_any(redis.Redis())
takes_any(aredis.Redis())
takes_sync(aredis.Redis())  # line 22: an asyncio client where a sync one is expected
takes_async(redis.Redis())  # line 23
takes_async(fakeredis.FakeRedis())  # line 24
takes_any(object())  # line 25
'''


@pytest.mark.slow
def test_mypy_accepts_real_clients_and_rejects_the_wrong_kind(tmp_path):
    from mypy import api

    path = tmp_path / "snippet.py"
    path.write_text(SNIPPET)
    out, err, status = api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy"), str(path)])
    errors = sorted(int(m.group(1)) for m in re.finditer(r"snippet\.py:(\d+): error:", out))
    assert errors == [22, 23, 24, 25], out + err
    assert status == 1


def test_runtime_isinstance_and_is_async_client():
    sync_clients = [redis.Redis(), fakeredis.FakeRedis(), redis.RedisCluster.__new__(redis.RedisCluster)]
    async_clients = [aredis.Redis(), aredis.RedisCluster.__new__(aredis.RedisCluster)]
    for c in sync_clients:
        assert isinstance(c, SyncRedisLike) and not is_async_client(c)
    for c in async_clients:
        assert isinstance(c, AsyncRedisLike) and is_async_client(c)
    assert not isinstance(aredis.Redis(), SyncRedisLike)  # no __enter__
    assert not isinstance(redis.Redis(), AsyncRedisLike)  # no aclose / __aenter__
    assert not is_async_client(object())


def test_make_lint_covers_examples_and_ci_runs_lint_then_test():
    makefile = (ROOT / "Makefile").read_text()
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "ruff check distkit tests bench examples infra" in lint
    assert "mypy --strict distkit examples" in lint
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci == ["set -euo pipefail", "make lint", "make test"]


PUBLIC_SIGNATURES = '''
import redis
import redis.asyncio as aredis
from sqlalchemy import create_engine

from distkit.cache import HotKeyCache
from distkit.gateway import ServiceRegistry
from distkit.idempotency import RedisIdempotencyStore, idempotent
from distkit.idgen import RedisWorkerLease
from distkit.locks import AsyncLocks, Locks
from distkit.messaging import InMemoryBroker
from distkit.ratelimit import AsyncRedisBackend, RedisBackend
from distkit.resilience import AsyncRedisBreakerStore, RedisBreakerStore
from distkit.saga import MemorySagaLog, SagaCoordinator
from distkit.stock import LockedDbStock, RedisStock

RedisBackend(redis.Redis())
AsyncRedisBackend(aredis.Redis())
RedisBreakerStore(redis.Redis())
AsyncRedisBreakerStore(aredis.Redis())
ServiceRegistry(redis.Redis())
RedisWorkerLease(redis.Redis(), "ns")
RedisStock(redis.Redis())
LockedDbStock(create_engine("sqlite://"), Locks(redis.Redis()))
HotKeyCache(redis.Redis(), locks=Locks(redis.Redis()))
idempotent(RedisIdempotencyStore(aredis.Redis()), key="id")
SagaCoordinator(MemorySagaLog(), broker=InMemoryBroker())
RedisBackend(aredis.Redis())  # line 28: each line below passes the wrong kind of object
AsyncRedisBackend(redis.Redis())
RedisBreakerStore(aredis.Redis())
ServiceRegistry(aredis.Redis())
RedisWorkerLease(aredis.Redis(), "ns")
RedisStock(aredis.Redis())
LockedDbStock(create_engine("sqlite://"), object())
HotKeyCache(redis.Redis(), locks=object())
idempotent(object(), key="id")
SagaCoordinator(MemorySagaLog(), broker=object())  # line 37
Locks(aredis.Redis())
AsyncLocks(redis.Redis())  # line 39
'''


@pytest.mark.slow
def test_public_signatures_take_protocols_not_any(tmp_path):
    """Issue 16 §5: a user's mypy --strict catches the wrong client kind or a non-store at each entry point
    (these took ``Any`` before, and the lazily exported names were ``Any`` to type checkers)."""
    from mypy import api

    path = tmp_path / "usage.py"
    path.write_text(PUBLIC_SIGNATURES)
    out, err, status = api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy"), str(path)])
    errors = sorted({int(m.group(1)) for m in re.finditer(r"usage\.py:(\d+): error:", out)})
    assert errors == list(range(28, 40)), out + err
    assert status == 1


def test_locks_refuse_the_wrong_kind_of_client_at_once():
    """``Locks(redis.asyncio.Redis())`` and ``AsyncLocks(redis.Redis())`` type-checked and were accepted, then the
    first acquire failed deep inside with a bare ``TypeError`` ('coroutine' object is not subscriptable)."""
    from distkit.errors import InvalidArgumentError
    from distkit.locks import AsyncLocks, Locks

    with pytest.raises(InvalidArgumentError, match="AsyncLocks"):
        Locks(aredis.Redis())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="Locks"):
        AsyncLocks(redis.Redis())  # type: ignore[arg-type]
    Locks(fakeredis.FakeRedis()).close()
