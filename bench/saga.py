"""Durable 3-step sagas/workflows per second on the same PostgreSQL: distkit vs DBOS, 1 and 8 callers.

Equal durability: both write their state before each side effect. ``trivial`` steps do nothing; ``insert``
steps write one row each — distkit as ``SqlStep`` (row and log record in one transaction: exactly once),
DBOS as ``@DBOS.transaction`` (its exactly-once form). Also: what one saga step adds over a plain call.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench._table import Row, print_table


def _throughput(fn: Callable[[int], Any], *, threads: int, seconds: float) -> float:
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def worker(t: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            fn(t * 10_000_000 + i)
            i += 1
        done[t] = i

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def main() -> None:
    url = os.environ.get("DISTKIT_DATABASE_URL")
    if not url:
        print("bench.saga: DISTKIT_DATABASE_URL is not set (make bench starts PostgreSQL)")
        return
    from sqlalchemy import create_engine, text

    from distkit.saga import Saga, SagaCoordinator, SqlSagaLog, SqlStep, Step

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"}, pool_size=16, max_overflow=8)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE effects (saga_id text, step text)"))
    rows: list[Row] = []
    seconds = 3.0
    try:
        def noop(ctx: Any) -> None:
            return None

        def insert(ctx: Any) -> None:
            ctx.connection.execute(text("INSERT INTO effects VALUES (:s, :t)"), {"s": ctx.saga_id, "t": ctx.step})

        trivial = Saga("trivial", steps=[Step(f"s{i}", action=noop) for i in range(3)])
        inserting = Saga("insert", steps=[SqlStep(f"s{i}", action=insert) for i in range(3)])
        coord = SagaCoordinator(SqlSagaLog(engine), max_workers=8)
        run_id = uuid.uuid4().hex[:6]
        for label, saga in (("trivial", trivial), ("insert", inserting)):
            for threads in (1, 8):
                r = _throughput(lambda i, s=saga, n=threads: coord.run(s, f"{run_id}-{s.name}-{n}-{i}"),
                                threads=threads, seconds=seconds)
                rows.append(Row(f"3-step {label}, {threads} caller(s)", "distkit SagaCoordinator", r, "sagas/s"))
        coord.close()

        def three_inserts(i: int) -> None:
            for s in range(3):
                with engine.begin() as conn:
                    conn.execute(text("INSERT INTO effects VALUES (:s, :t)"), {"s": str(i), "t": str(s)})

        plain = {t: _throughput(three_inserts, threads=t, seconds=seconds) for t in (1, 8)}

        dbos_rates = _dbos(url, schema, seconds)

        # the cost one step adds over calling the function
        one = Saga("one", steps=[Step("s", action=noop)])
        coord = SagaCoordinator(SqlSagaLog(engine))
        n = 200
        t0 = time.perf_counter()
        for i in range(n):
            coord.run(one, f"{run_id}-one-{i}")
        per_saga_ms = (time.perf_counter() - t0) / n * 1000
        coord.close()
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    table: list[Row] = []
    for label in ("trivial", "insert"):
        for threads in (1, 8):
            work = f"3-step {label}, {threads} caller(s)"
            if (label, threads) in dbos_rates:
                impl = "DBOS workflow" + (" (datasource txns)" if label == "insert" else " (@DBOS.step)")
                table.append(Row(work, impl, dbos_rates[(label, threads)], "sagas/s"))
            table.extend(r for r in rows if r.work == work)
            if label == "insert":
                table.append(Row(work, "3 plain INSERTs (no engine)", plain[threads], "sagas/s",
                                 note="no durability bookkeeping"))
    table.append(Row("1-step saga latency (trivial step)", "distkit SagaCoordinator", per_saga_ms, "ms",
                     note="create + 2 step writes + finish; a direct call costs ~0"))
    print_table("distkit.saga vs DBOS on the same PostgreSQL (ratio vs DBOS)", table, baseline="DBOS")


def _dbos(url: str, schema: str, seconds: float) -> dict[tuple[str, int], float]:
    try:
        from dbos import DBOS, SetWorkflowID, SQLAlchemyDatasource
    except ImportError:
        print("bench.saga: dbos is not installed; skipping the peer")
        return {}
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    base = make_url(url)
    sys_url = base.set(drivername="postgresql", database=f"{base.database}_dbos_sys")
    import logging

    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(config={"name": "distkit-bench", "system_database_url": sys_url.render_as_string(hide_password=False),
                 "log_level": "WARNING"})
    ds = SQLAlchemyDatasource.create(base.set(drivername="postgresql").render_as_string(hide_password=False))

    @DBOS.step()
    def noop_step() -> None:
        return None

    @DBOS.workflow()
    def trivial_wf() -> None:
        noop_step()
        noop_step()
        noop_step()

    @ds.transaction()
    def insert_tx(i: str, s: int) -> None:
        ds.sql_session().execute(text(f'INSERT INTO "{schema}".effects VALUES (:s, :t)'), {"s": i, "t": str(s)})

    @DBOS.workflow()
    def insert_wf(i: str) -> None:
        insert_tx(i, 0)
        insert_tx(i, 1)
        insert_tx(i, 2)

    DBOS.launch()
    out: dict[tuple[str, int], float] = {}
    run_id = uuid.uuid4().hex[:6]
    try:
        for label, wf in (("trivial", lambda i: trivial_wf()), ("insert", lambda i: insert_wf(str(i)))):
            for threads in (1, 8):
                def call(i: int, wf: Any = wf, label: str = label, threads: int = threads) -> None:
                    with SetWorkflowID(f"{run_id}-{label}-{threads}-{i}"):
                        wf(i)

                out[(label, threads)] = _throughput(call, threads=threads, seconds=seconds)
    finally:
        DBOS.destroy()
    return out
