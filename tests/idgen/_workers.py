"""Child-process bodies for the lease tests (importable by spawn)."""

from __future__ import annotations

from pathlib import Path


def generate(kind: str, url: str, schema: str, namespace: str, count: int, out: str, start_evt) -> None:
    from distkit.idgen import RedisWorkerLease, Snowflake, SqlWorkerLease

    if kind == "redis":
        import redis

        lease = RedisWorkerLease(redis.Redis.from_url(url), namespace=namespace, max_worker_id=31, ttl_s=10)
    else:
        from sqlalchemy import create_engine

        engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
        lease = SqlWorkerLease(engine, namespace=namespace, max_worker_id=31, ttl_s=10)
    gen = Snowflake.from_lease(lease, datacenter_id=1 if kind == "redis" else 2)  # one datacenter per store
    start_evt.wait(60)  # barrier: every process holds its lease before anyone generates
    ids = gen.next_ids(count // 2) + [gen.next_id() for _ in range(count - count // 2)]
    Path(out).write_text("\n".join(map(str, [gen.worker_id, *ids])))
    start_evt.wait(60)  # ...and keeps it until everyone is done, so the ids are held concurrently
    gen.close()
