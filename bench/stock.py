"""Deductions/s of the three stock strategies on the same Redis and PostgreSQL, 1 and 8 threads (ratio vs (a))."""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench._table import Row, print_table


def _rate(fn: Callable[[str], Any], *, threads: int, seconds: float = 2.0) -> float:
    ids = itertools.count()
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def worker(t: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            fn(f"o-{next(ids)}")
            n += 1
        done[t] = n

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def main() -> None:
    redis_url, db_url = os.environ.get("DISTKIT_REDIS_URL"), os.environ.get("DISTKIT_DATABASE_URL")
    if not redis_url or not db_url:
        print("bench.stock: needs DISTKIT_REDIS_URL and DISTKIT_DATABASE_URL (make bench starts them)")
        return
    import redis
    from sqlalchemy import create_engine, text

    from distkit.locks import Locks
    from distkit.stock import LockedDbStock, RedisStock, TokenPoolStock

    ns = f"bench-{uuid.uuid4().hex[:6]}"
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(db_url, connect_args={"options": f"-csearch_path={schema}"}, pool_size=10)
    client = redis.Redis.from_url(redis_url)
    locks = Locks(client, namespace=ns)
    strategies: list[tuple[str, Any]] = [
        ("(a) LockedDbStock: lock + SQL UPDATE", LockedDbStock(engine, locks)),
        ("(b) RedisStock: Lua check-and-decrement", RedisStock(client, namespace=ns)),
        ("(c) TokenPoolStock: SPOP a token", TokenPoolStock(client, namespace=ns)),
    ]
    rows = []
    try:
        for threads in (1, 8):
            for name, stock in strategies:
                sku = f"sku-{threads}"
                stock.load(sku, 1_000_000 if "Token" not in name else 200_000)
                r = _rate(lambda order, s=stock, k=sku: s.try_deduct(k, 1, order_id=order), threads=threads)
                rows.append(Row(f"deductions/s, {threads} thread(s)", name, r, "ops/s"))
    finally:
        locks.close()
        for k in client.scan_iter(match=f"*{ns}*"):
            client.delete(k)
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    print_table("distkit.stock: one deduction per order (ratio vs strategy (a))", rows)
