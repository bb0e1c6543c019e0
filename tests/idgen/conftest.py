"""Fixtures of the idgen tests: leases on the real Redis / PostgreSQL, worker subprocesses, store pokes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from distkit._redis import key

ROOT = Path(__file__).resolve().parents[2]


class Store:
    """One lease store of one test: builds leases and pokes at their records (seed a mark, expire a lease)."""

    def __init__(self, kind: str, request: Any, namespace: str) -> None:
        self.kind = kind
        self.namespace = namespace
        self.request = request
        self.leases: list[Any] = []
        if kind == "redis":
            self.client = request.getfixturevalue("redis_client")
            self.url = request.getfixturevalue("redis_url")
            self.schema = ""
        else:
            self.engine = request.getfixturevalue("pg_engine")
            self.url = request.getfixturevalue("database_url")
            self.schema = request.getfixturevalue("pg_schema")

    def lease(self, **kw: Any) -> Any:
        from distkit.idgen import RedisWorkerLease, SqlWorkerLease

        kw.setdefault("ttl_s", 1.0)
        if self.kind == "redis":
            lease = RedisWorkerLease(self.client, namespace=self.namespace, **kw)
        else:
            lease = SqlWorkerLease(self.engine, namespace=self.namespace, **kw)
        self.leases.append(lease)
        return lease

    def cfg(self) -> dict[str, Any]:
        """What a worker subprocess needs to build the same lease."""
        return {"kind": self.kind, "url": self.url, "schema": self.schema, "namespace": self.namespace}

    def mark(self, worker_id: int) -> int:
        if self.kind == "redis":
            raw = self.client.hget(key("idgen", self.namespace, "hw"), str(worker_id))
            return int(raw or 0)
        from sqlalchemy import text

        with self.engine.connect() as c:
            row = c.execute(
                text("SELECT high_water_ms FROM distkit_worker_leases WHERE namespace = :ns AND worker_id = :w"),
                {"ns": self.namespace, "w": worker_id},
            ).first()
        return int(row[0]) if row else 0

    def set_mark(self, worker_id: int, mark_ms: int) -> None:
        if self.kind == "redis":
            self.client.hset(key("idgen", self.namespace, "hw"), str(worker_id), mark_ms)
            return
        from sqlalchemy import text

        with self.engine.begin() as c:
            n = c.execute(
                text("UPDATE distkit_worker_leases SET high_water_ms = :m WHERE namespace = :ns AND worker_id = :w"),
                {"ns": self.namespace, "w": worker_id, "m": mark_ms},
            ).rowcount
            if n == 0:
                c.execute(
                    text(
                        "INSERT INTO distkit_worker_leases (namespace, worker_id, token, expires_at_ms, high_water_ms)"
                        " VALUES (:ns, :w, '', 0, :m)"
                    ),
                    {"ns": self.namespace, "w": worker_id, "m": mark_ms},
                )

    def expire(self, worker_id: int) -> None:
        """The lease record vanishes as if its ttl ran out (the mark stays)."""
        if self.kind == "redis":
            self.client.delete(f"{key('idgen', self.namespace)}:w:{worker_id}")
            return
        from sqlalchemy import text

        with self.engine.begin() as c:
            c.execute(
                text("UPDATE distkit_worker_leases SET expires_at_ms = 0 WHERE namespace = :ns AND worker_id = :w"),
                {"ns": self.namespace, "w": worker_id},
            )

    def held(self) -> int:
        """How many worker ids are leased right now."""
        if self.kind == "redis":
            return sum(1 for _ in self.client.scan_iter(match=f"{key('idgen', self.namespace)}:w:*"))
        from sqlalchemy import text

        with self.engine.connect() as c:
            return int(
                c.execute(
                    text(
                        "SELECT count(*) FROM distkit_worker_leases WHERE namespace = :ns AND worker_id >= 0"
                        " AND expires_at_ms > :now"
                    ),
                    {"ns": self.namespace, "now": time.time_ns() // 1_000_000},
                ).scalar_one()
            )

    def close(self) -> None:
        for lease in self.leases:
            lease.close()


@pytest.fixture(params=["redis", "sql"])
def store(request: Any, namespace: str) -> Any:
    s = Store(request.param, request, namespace)
    yield s
    s.close()


@pytest.fixture
def redis_store(request: Any, namespace: str) -> Any:
    s = Store("redis", request, namespace)
    yield s
    s.close()


def spawn_worker(cfg: dict[str, Any]) -> subprocess.Popen[bytes]:
    """``python -m tests.idgen._workers <cfg>`` from the repository root (a real, separate process)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.idgen._workers", json.dumps(cfg)], cwd=ROOT, env=env, stderr=subprocess.PIPE
    )


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def is_stopped(pid: int) -> bool:
    """True once ``pid`` is stopped (SIGSTOP): state T in /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def acquire_when_free(make: Any, timeout: float = 10.0) -> Any:
    """``make()`` until it stops raising WorkerIdExhaustedError (a crashed holder's record expires)."""
    from distkit.errors import WorkerIdExhaustedError

    deadline = time.monotonic() + timeout
    while True:
        try:
            return make()
        except WorkerIdExhaustedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def duplicates(ids: list[int]) -> int:
    return len(ids) - len(set(ids))
