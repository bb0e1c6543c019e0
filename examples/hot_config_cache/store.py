"""The configuration's source of truth: one SQL row per setting, each carrying the version that last wrote it.

An admin tool saves a new version one setting at a time (one commit each), so the table is *torn* while a save
runs: some rows at the new version, some at the old. A cache reload that read it then would serve a mix no one
ever configured, and keep serving it for its whole TTL. That is what the read-write lock prevents.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, select

SETTINGS = ("checkout.enabled", "checkout.max_items", "banner.text", "price.multiplier")


class ConfigStore:
    """``<table>`` (name, value, version): what ``read`` returns is the cached value, ``save`` what the admin
    does."""

    def __init__(self, engine: Engine, table: str) -> None:
        self.engine = engine
        self.rows = Table(table, MetaData(), Column("name", String(100), primary_key=True),
                          Column("value", String(200), nullable=False), Column("version", Integer, nullable=False))
        self.rows.create(engine, checkfirst=True)

    def seed(self) -> None:
        """Version 1 of every setting, unless the table already has rows."""
        with self.engine.begin() as c:
            if c.execute(select(self.rows.c.name).limit(1)).first() is None:
                c.execute(self.rows.insert(), [{"name": n, "value": _value(n, 1), "version": 1} for n in SETTINGS])

    def read(self) -> dict[str, Any]:
        """The whole configuration, as the cache stores it (JSON): ``{name: {"value": ..., "version": n}}``."""
        with self.engine.connect() as c:
            rows = c.execute(select(self.rows.c.name, self.rows.c.value, self.rows.c.version)).all()
        return {name: {"value": value, "version": version} for name, value, version in rows}

    def save(self, version: int, pause_s: float = 0.005) -> None:
        """Write ``version`` of every setting, one commit per setting (the table is torn in between)."""
        for i, name in enumerate(SETTINGS):
            if i:
                time.sleep(pause_s)  # the admin tool's work between two saves; widens the torn window
            with self.engine.begin() as c:
                c.execute(self.rows.update().where(self.rows.c.name == name)
                          .values(value=_value(name, version), version=version))


def versions(config: dict[str, Any]) -> set[int]:
    """The versions present in one configuration value: exactly one unless it is torn."""
    return {int(row["version"]) for row in config.values()}


def _value(name: str, version: int) -> str:
    return f"{name}@v{version}"
