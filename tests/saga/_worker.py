"""A coordinator process that SIGKILLs itself at a chosen point, for the recovery tests.

``python -m tests.saga._worker DB_URL SCHEMA MODE N``

Effects go to ``effects`` (unique on the idempotency key: a repeated call is deduplicated, as the docs tell
users to do) and every execution to ``executions`` (no dedupe: shows that the crash really hit). The
process kills itself the first time it reaches MODE's point (a row in ``crashed`` marks that it did).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from sqlalchemy import create_engine, text

from distkit.saga import RetryPolicy, Saga, SagaCoordinator, SqlSagaLog, SqlStep, Step

MODES = ("before_action", "after_action", "during_compensation", "sql_after_effect", "block")


def make_saga(engine: Any, mode: str, *, crash: bool = True) -> Saga:
    """The saga of ``mode``; ``crash=False`` is the same saga without the crash (what the resumer runs)."""

    def crash_once(point: str) -> None:
        if point != mode or not crash:
            return
        with engine.begin() as conn:
            first = conn.execute(text("INSERT INTO crashed VALUES (1) ON CONFLICT DO NOTHING")).rowcount == 1
        if first:
            os.kill(os.getpid(), signal.SIGKILL)

    def effect(ctx: Any, kind: str, conn: Any = None) -> None:
        def write(c: Any) -> None:
            c.execute(text("INSERT INTO executions (saga_id, kind) VALUES (:s, :k)"), {"s": ctx.saga_id, "k": kind})
            c.execute(text("INSERT INTO effects (key, saga_id, kind) VALUES (:key, :s, :k) ON CONFLICT DO NOTHING"),
                      {"key": ctx.idempotency_key, "s": ctx.saga_id, "k": kind})

        if conn is not None:
            write(conn)
        else:
            with engine.begin() as c:
                write(c)

    def action(kind: str) -> Any:
        def run(ctx: Any) -> str:
            if kind == "b":
                crash_once("before_action")
                if mode == "block" and crash:
                    threading.Event().wait()  # in flight until killed
            effect(ctx, kind)
            if kind == "b":
                crash_once("after_action")
            return kind

        return run

    def compensate(kind: str) -> Any:
        def run(ctx: Any) -> None:
            effect(ctx, f"undo-{kind}")
            crash_once("during_compensation")

        return run

    def sql_b(ctx: Any) -> str:
        effect(ctx, "b", ctx.connection)
        crash_once("sql_after_effect")  # the effect is not committed yet: it must vanish with the process
        return "b"

    def c_action(ctx: Any) -> str:
        if mode == "during_compensation":
            raise RuntimeError("c fails so that a and b are compensated")
        return action("c")(ctx)

    b: Step = SqlStep("b", action=sql_b) if mode == "sql_after_effect" else Step(
        "b", action=action("b"), compensate=compensate("b"))
    return Saga("recovery", steps=[
        Step("a", action=action("a"), compensate=compensate("a")),
        b,
        Step("c", action=c_action, compensate=compensate("c"), retry=RetryPolicy(max_attempts=1)),
    ])


def setup(engine: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS effects (key text PRIMARY KEY, saga_id text, kind text)"))
        conn.execute(text("CREATE TABLE IF NOT EXISTS executions (saga_id text, kind text)"))
        conn.execute(text("CREATE TABLE IF NOT EXISTS crashed (id int PRIMARY KEY)"))


def main(db_url: str, schema: str, mode: str, n: int) -> None:
    engine = create_engine(db_url, connect_args={"options": f"-csearch_path={schema}"}, pool_size=20,
                           max_overflow=20)
    setup(engine)
    saga = make_saga(engine, mode)
    coord = SagaCoordinator(SqlSagaLog(engine), lease_s=1.0, max_workers=min(n, 1000) if mode == "block" else 4)
    futures = [coord.start(saga, f"{mode}-{i}", {"i": i}) for i in range(n)]
    for f in futures:
        f.result()
    print("finished without crashing", flush=True)
    sys.exit(3)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
