"""Run as a script by the tests: what a user with ``pip install distkit`` (no extras) can and cannot import.

``python no_extras_probe.py [module ...]`` first makes each named module unimportable (to simulate a venv
without it), then prints one JSON object: the in-memory results and, per name that needs an extra, the error.
Only the standard library and distkit are used, so this runs in a bare venv with just the wheel installed.
"""

from __future__ import annotations

import importlib
import json
import sys

for blocked in sys.argv[1:]:
    sys.modules[blocked] = None  # type: ignore[assignment]  # `import blocked` now raises ModuleNotFoundError

NEEDS_EXTRA = {
    "distkit.locks": ["Locks", "AsyncLocks", "Lock", "Semaphore", "ReadWriteLock"],
    "distkit.ratelimit": ["RedisBackend", "AsyncRedisBackend"],
    "distkit.idempotency": ["RedisIdempotencyStore", "SqlIdempotencyStore", "Inbox"],
    "distkit.idgen": ["RedisWorkerLease", "SqlWorkerLease"],
    "distkit.messaging": ["KafkaBroker", "Outbox", "OutboxRelay"],
}


def main() -> None:
    out: dict[str, object] = {}
    for module in [*NEEDS_EXTRA, "distkit.config", "distkit.cli", "distkit.errors"]:
        importlib.import_module(module)
    out["imported"] = sorted(NEEDS_EXTRA)

    from distkit.ratelimit import MemoryBackend, Rate, TokenBucket

    limiter = TokenBucket(Rate(10, per_s=1.0), burst=2, backend=MemoryBackend())
    out["decisions"] = [limiter.acquire("user:1").allowed for _ in range(3)]

    from distkit.messaging import InMemoryBroker

    broker = InMemoryBroker()
    with broker.transactional_producer("probe-1") as tx:
        tx.send("orders", {"order_id": 1}, key=b"1")
    consumer = broker.consumer(group_id="g", topics=["orders"])
    out["messages"] = [m.value for m in consumer.poll_iter(timeout_s=0.01, max_messages=1)]

    from distkit.idgen import Snowflake

    gen = Snowflake(worker_id=3)
    out["worker_id"] = gen.decode(gen.next_id()).worker_id

    from distkit.config import Settings

    errors: dict[str, list[str]] = {}
    for module, names in NEEDS_EXTRA.items():
        mod = importlib.import_module(module)
        for name in names:
            try:
                getattr(mod, name)
            except ImportError as exc:
                errors[f"{module}.{name}"] = [type(exc).__name__, str(exc), str(isinstance(exc, ImportError))]
            else:
                errors[f"{module}.{name}"] = ["ok", "", ""]
    for method in ("redis", "async_redis", "sql_engine"):
        settings = Settings(redis_url="redis://127.0.0.1:1/0", database_url="postgresql+psycopg://u@127.0.0.1:1/db")
        try:
            getattr(settings, method)()
        except ImportError as exc:
            errors[f"Settings.{method}"] = [type(exc).__name__, str(exc), "True"]
        else:
            errors[f"Settings.{method}"] = ["ok", "", ""]
    out["errors"] = errors
    out["heavy_loaded"] = sorted(m for m in ("redis", "confluent_kafka", "sqlalchemy", "psycopg") if sys.modules.get(m))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
