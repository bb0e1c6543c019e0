"""Saga fixtures: every behaviour test runs on the in-memory log, SQLite and the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def saga_log(request: Any, tmp_path: Any) -> Iterator[Any]:
    from distkit.saga import MemorySagaLog, SqlSagaLog

    if request.param == "memory":
        yield MemorySagaLog()
        return
    from sqlalchemy import create_engine

    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path}/saga.db")
    else:
        engine = request.getfixturevalue("pg_engine")
    yield SqlSagaLog(engine)
    if request.param == "sqlite":
        engine.dispose()


class Recorder:
    """Actions and compensations that record what ran, and fail on demand."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: dict[str, int] = {}  # name -> how many more times to raise

    def action(self, name: str, result: Any = None) -> Any:
        def run(ctx: Any) -> Any:
            self.calls.append(name)
            left = self.fail.get(name, 0)
            if left:
                self.fail[name] = left - 1
                raise RuntimeError(f"{name} failed")
            return result if result is not None else f"{name}-ok"

        return run


@pytest.fixture
def rec() -> Recorder:
    return Recorder()
