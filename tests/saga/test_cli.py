"""``distkit saga list --status failed`` shows the stuck sagas an operator must finish."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from distkit.saga import RetryPolicy, Saga, SagaCoordinator, SagaStatus, SqlSagaLog, Step

ROOT = Path(__file__).resolve().parents[2]


def test_cli_lists_stuck_sagas(database_url: str, pg_schema: str, pg_engine: Any) -> None:
    def boom(ctx: Any) -> None:
        raise RuntimeError("refund service down")

    saga = Saga("pay", steps=[Step("debit", action=lambda c: 1, compensate=boom,
                                   compensate_retry=RetryPolicy(max_attempts=2)),
                              Step("order", action=lambda c: 1 / 0)])
    with SagaCoordinator(SqlSagaLog(pg_engine), sleep=lambda s: None) as coord:
        assert coord.run(saga, "stuck-€-1").status is SagaStatus.FAILED
        assert coord.run(Saga("ok", steps=[Step("a", action=lambda c: 1)]), "fine-1").status is SagaStatus.COMPLETED
    url = f"{database_url}?options=-csearch_path%3D{pg_schema}"
    env = {**os.environ, "DISTKIT_DATABASE_URL": url}
    out = subprocess.run([sys.executable, "-m", "distkit.cli", "saga", "list", "--status", "failed", "--json"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    (row,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert row["saga_id"] == "stuck-€-1" and row["status"] == "FAILED" and "refund service down" in row["error"]
    table = subprocess.run([sys.executable, "-m", "distkit.cli", "saga", "list"], capture_output=True, text=True,
                           cwd=ROOT, env=env, timeout=60)
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 2
    bad = subprocess.run([sys.executable, "-m", "distkit.cli", "saga", "list", "--limit", "0"], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
