"""A coordinator SIGKILLed at each dangerous point; a new one's resume_pending finishes every saga with each
effect applied once (counted in PostgreSQL). And 1000 sagas in flight at the kill."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from distkit.saga import SagaCoordinator, SagaStatus, SqlSagaLog
from tests.saga._worker import make_saga, setup

ROOT = Path(__file__).resolve().parents[2]


def _run_worker(database_url: str, schema: str, mode: str, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.saga._worker", database_url, schema, mode, str(n)],
                            cwd=ROOT, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _resume_all(pg_engine: Any, mode: str, expected: int) -> list[Any]:
    log = SqlSagaLog(pg_engine)
    with SagaCoordinator(log, sagas=[make_saga(pg_engine, mode, crash=False)], lease_s=5, max_workers=8) as coord:
        deadline = time.monotonic() + 30
        results: list[Any] = []
        while time.monotonic() < deadline:  # the dead coordinator's leases run out after 1 s
            results += coord.resume_pending()
            if all(r.status.terminal for r in log.find(limit=10_000)) and len(log.find(limit=10_000)) == expected:
                break
            time.sleep(0.2)
    return log.find(limit=10_000)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["before_action", "after_action", "during_compensation", "sql_after_effect"])
def test_sigkill_at_each_point_then_resume_applies_every_effect_once(
    mode: str, pg_engine: Any, database_url: str, pg_schema: str
) -> None:
    setup(pg_engine)
    proc = _run_worker(database_url, pg_schema, mode, 8)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -9, err  # it really died at the point
    with pg_engine.connect() as conn:
        started = conn.execute(text("SELECT count(*) FROM distkit_sagas")).scalar_one()
    assert started >= 1
    records = _resume_all(pg_engine, mode, started)
    assert len(records) == started and all(r.status.terminal for r in records)
    expected = SagaStatus.COMPENSATED if mode == "during_compensation" else SagaStatus.COMPLETED
    assert {r.status for r in records} == {expected}
    with pg_engine.connect() as conn:
        effects = conn.execute(text("SELECT saga_id, kind, count(*) FROM effects GROUP BY 1, 2")).all()
        executions = conn.execute(text("SELECT kind, count(*) FROM executions GROUP BY 1")).all()
    per_saga: dict[str, list[str]] = {}
    for saga_id, kind, count in effects:
        assert count == 1
        per_saga.setdefault(saga_id, []).append(kind)
    want = ["a", "b", "undo-a", "undo-b"] if mode == "during_compensation" else ["a", "b", "c"]
    assert {s: sorted(k) for s, k in per_saga.items()} == {r.saga_id: want for r in records}
    ran = dict(executions)
    if mode == "after_action":
        assert ran["b"] >= started + 1  # the killed attempt's effect ran and was deduplicated on resume
    if mode == "during_compensation":
        assert ran["undo-b"] + ran["undo-a"] >= 2 * started + 1  # (other workers may have been mid-way too)
    if mode == "sql_after_effect":
        assert ran["b"] == started  # the killed SqlStep's uncommitted effect vanished: exactly once, no dedupe


@pytest.mark.slow
def test_a_thousand_sagas_in_flight_are_all_finished_after_a_sigkill(
    pg_engine: Any, database_url: str, pg_schema: str
) -> None:
    setup(pg_engine)
    proc = _run_worker(database_url, pg_schema, "block", 1000)
    try:
        deadline = time.monotonic() + 90
        in_flight = 0
        while time.monotonic() < deadline and in_flight < 1000:
            time.sleep(0.2)
            with pg_engine.connect() as conn:
                in_flight = conn.execute(text(
                    "SELECT count(*) FROM distkit_sagas WHERE steps LIKE '%\"name\":\"b\",\"state\":\"RUNNING\"%'"
                )).scalar_one() if conn.execute(text("SELECT to_regclass('distkit_sagas')")).scalar() else 0
        assert in_flight == 1000
    finally:
        proc.kill()
        proc.wait(30)
    t0 = time.monotonic()
    records = _resume_all(pg_engine, "block", 1000)
    took = time.monotonic() - t0
    print(f"\nresume of 1000 in-flight sagas after SIGKILL: {took:.1f} s (includes the 1 s lease)")
    assert len(records) == 1000 and {r.status for r in records} == {SagaStatus.COMPLETED}
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM effects")).scalar_one() == 3000
