"""Tracing fixtures: an SDK tracer provider with an in-memory exporter (never installed globally, so tests
stay independent), and two fresh PostgreSQL databases for the routing tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest


class Spans:
    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def finished(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())

    def by_name(self, name: str) -> Any:
        (span,) = [s for s in self.finished() if s.name == name]
        return span


@pytest.fixture
def spans() -> Iterator[Spans]:
    s = Spans()
    yield s
    s.provider.shutdown()


@pytest.fixture
def two_databases(database_url: str) -> Iterator[tuple[str, str]]:
    """URLs of two fresh databases on the PostgreSQL server of ``make test`` (dropped afterwards)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    names = [f"t_{uuid.uuid4().hex[:10]}_{s}" for s in ("a", "b")]
    with admin.connect() as conn:
        for n in names:
            conn.execute(text(f'CREATE DATABASE "{n}"'))
    base = make_url(database_url)
    urls = [base.set(database=n).render_as_string(hide_password=False) for n in names]
    yield urls[0], urls[1]
    with admin.connect() as conn:
        for n in names:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)'))
    admin.dispose()
