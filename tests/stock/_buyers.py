"""One buyer process: ``THREADS`` threads each buy one unit for their own order, twice (a client retry).

``python -m tests.stock._buyers STRATEGY SKU NAMESPACE PROCESS THREADS [SCHEMA]`` prints the JSON list of
order ids whose deduction succeeded, and whether every retry agreed with the first answer.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

import redis


def make(strategy: str, namespace: str, schema: str | None) -> Any:
    # a bounded pool, as a service would have: 250 threads share 32 connections
    pool = redis.BlockingConnectionPool.from_url(os.environ["DISTKIT_REDIS_URL"], max_connections=32, timeout=60)
    client = redis.Redis(connection_pool=pool)
    if strategy == "redis":
        from distkit.stock import RedisStock

        return RedisStock(client, namespace=namespace)
    if strategy == "tokens":
        from distkit.stock import TokenPoolStock

        return TokenPoolStock(client, namespace=namespace)
    from sqlalchemy import create_engine

    from distkit.locks import Locks
    from distkit.stock import LockedDbStock

    engine = create_engine(os.environ["DISTKIT_DATABASE_URL"], connect_args={"options": f"-csearch_path={schema}"},
                           pool_size=10, max_overflow=10, pool_timeout=120)  # 4 processes: 80 of 200
    return LockedDbStock(engine, Locks(client, namespace=namespace), lock_timeout_s=60)


def main(strategy: str, sku: str, namespace: str, proc: int, threads: int, schema: str | None) -> None:
    stock = make(strategy, namespace, schema)
    won: list[str] = []
    disagree: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    gate = threading.Barrier(threads)

    def buy(i: int) -> None:
        order = f"o-{proc}-{i}"
        try:
            gate.wait(30)
            first = stock.try_deduct(sku, 1, order_id=order)
            again = stock.try_deduct(sku, 1, order_id=order)  # the client retried: never a second unit
            with lock:
                if first:
                    won.append(order)
                if again != first:
                    disagree.append(order)
        except Exception as exc:
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")

    ts = [threading.Thread(target=buy, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps({"won": won, "disagree": disagree, "errors": errors}), flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], a[2], int(a[3]), int(a[4]), a[5] if len(a) > 5 else None)
