"""Child-process bodies for the idempotency tests (importable by spawn)."""

from __future__ import annotations

import os
import time


def make_store(kind: str, url: str, schema: str):
    if kind.startswith("redis"):
        import redis

        from distkit.idempotency import RedisIdempotencyStore

        return RedisIdempotencyStore(redis.Redis.from_url(url), prefix="idem-" + schema, direct=kind == "redis")
    from sqlalchemy import create_engine

    from distkit.idempotency import SqlIdempotencyStore

    return SqlIdempotencyStore(create_engine(url, connect_args={"options": f"-csearch_path={schema}"}))


def deliver(
    kind: str,
    url: str,
    schema: str,
    redis_url: str,
    counter: str,
    key: str,
    sleep_s: float,
    in_progress_ttl_s: float,
    start_evt,
    out: str,
) -> None:
    """Deliver one message; write the outcome ('ran'/'result'/'in_progress'/'killable') to ``out``."""
    import redis

    from distkit.errors import IdempotencyInProgressError
    from distkit.idempotency import idempotent

    r = redis.Redis.from_url(redis_url)
    store = make_store(kind, url, schema)

    @idempotent(store, key="order_id", in_progress_ttl_s=in_progress_ttl_s, scope="charge")
    def handle(order_id: str) -> dict:
        r.incr(counter)
        r.expire(counter, 300)
        with open(out + ".started", "w") as f:
            f.write(str(os.getpid()))
        time.sleep(sleep_s)
        return {"order": order_id, "charged": 100}

    if start_evt is not None:
        start_evt.wait(30)
    try:
        outcome = "result" if handle(key) == {"order": key, "charged": 100} else "wrong"
    except IdempotencyInProgressError:
        outcome = "in_progress"
    with open(out, "w") as f:
        f.write(outcome)


def inbox_deliver(url: str, schema: str, message_id: str, times: int, start_evt) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    from distkit.idempotency import Inbox

    engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    inbox = Inbox(engine)
    start_evt.wait(30)
    for _ in range(times):
        with Session(engine) as s, s.begin():
            with inbox.receive(s, message_id=message_id, consumer="stock") as fresh:
                if fresh:
                    s.execute(text("INSERT INTO reservations (message_id, qty) VALUES (:m, 1)"), {"m": message_id})
