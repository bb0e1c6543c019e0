"""Order ids for several workers: leased worker ids (SQLite), a clock rollback, and decoding."""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy import create_engine

from distkit.idgen import Butterfly, RollbackPolicy, Snowflake, SqlWorkerLease


class StepClock:
    """A clock we can step back, as an NTP correction would."""

    def __init__(self, start_ms: int) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(1, round(seconds * 1000))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'ids.db'}")
        # a brand-new namespace waits one ttl before its first id (its marks might have been lost): keep it short
        gens = [
            Snowflake.from_lease(SqlWorkerLease(engine, namespace="orders", max_worker_id=31, ttl_s=1))
            for _ in range(3)
        ]
        print("three services leased worker ids", sorted(g.worker_id for g in gens))
        ids = [g.next_id() for g in gens for _ in range(2)]
        print("order ids:", ids[:3], "...", "all unique:", len(set(ids)) == len(ids))
        print("decoded:", gens[0].decode(ids[0]))
        for g in gens:
            g.close()
        engine.dispose()

    clock = StepClock(1_800_000_000_000)
    strict = Snowflake(worker_id=1, clock=clock, rollback=RollbackPolicy.WAIT, max_rollback_wait_ms=5)
    relaxed = Butterfly(worker_id=1, clock=clock)
    strict.next_id()
    before = relaxed.next_id()
    clock.now -= 10_000  # NTP stepped the clock back 10 s
    try:
        strict.next_id()
    except Exception as exc:
        print("Snowflake(WAIT, 5 ms):", type(exc).__name__, "-", str(exc).split(";")[0])
    after = relaxed.next_id()
    print(f"Butterfly kept going: {after} > {before}: {after > before}")
