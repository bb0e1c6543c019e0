"""Child-process bodies for the lease and fault tests.

``generate`` is a ``multiprocessing`` (spawn) target; the fault scenarios run as
``python -m tests.idgen._workers '<json cfg>'`` and write their ids to ``cfg["out"]`` as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any


def generate(kind: str, url: str, schema: str, namespace: str, count: int, out: str, start_evt: Any) -> None:
    from distkit.idgen import RedisWorkerLease, Snowflake, SqlWorkerLease

    if kind == "redis":
        import redis

        lease: Any = RedisWorkerLease(redis.Redis.from_url(url), namespace=namespace, max_worker_id=31, ttl_s=2)
    else:
        from sqlalchemy import create_engine

        engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
        lease = SqlWorkerLease(engine, namespace=namespace, max_worker_id=31, ttl_s=2)
    gen = Snowflake.from_lease(lease, datacenter_id=1 if kind == "redis" else 2)  # one datacenter per store
    start_evt.wait(60)  # barrier: every process holds its lease before anyone generates
    ids = gen.next_ids(count // 2) + [gen.next_id() for _ in range(count - count // 2)]
    Path(out).write_text("\n".join(map(str, [gen.worker_id, *ids])))
    start_evt.wait(60)  # ...and keeps it until everyone is done, so the ids are held concurrently
    gen.close()


def make_lease(cfg: dict[str, Any]) -> Any:
    from distkit.idgen import RedisWorkerLease, SqlWorkerLease

    kw = {"namespace": cfg["namespace"], "max_worker_id": cfg.get("max_worker_id", 0), "ttl_s": cfg["ttl_s"]}
    if cfg["kind"] == "redis":
        import redis

        return RedisWorkerLease(redis.Redis.from_url(cfg["url"]), **kw)
    from sqlalchemy import create_engine

    engine = create_engine(cfg["url"], connect_args={"options": f"-csearch_path={cfg['schema']}"})
    return SqlWorkerLease(engine, **kw)


def _write(cfg: dict[str, Any], **data: Any) -> None:
    tmp = cfg["out"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, cfg["out"])


def burst_crash(cfg: dict[str, Any]) -> None:
    """Issue a few ids, stay idle for a while, burst right after a renewal, then die by SIGKILL."""
    from distkit.idgen import Snowflake

    lease = make_lease(cfg)
    gen = Snowflake.from_lease(lease)
    ids = [gen.next_id() for _ in range(10)]
    time.sleep(cfg["idle_s"])

    def renewed() -> float:
        return float(getattr(lease, "_valid_until", None) or lease._deadline)

    before = renewed()
    while renewed() == before:  # burst right after a renewal: the next one would come after the crash
        time.sleep(0.001)
    burst = gen.next_ids(cfg["burst"] // 2) + [gen.next_id() for _ in range(cfg["burst"] // 2)]
    fd = os.open(cfg["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, json.dumps({"ids": ids + burst, "burst_first": burst[0]}).encode())  # in the page cache
    os.kill(os.getpid(), signal.SIGKILL)


def pause(cfg: dict[str, Any]) -> None:
    """A holder whose clock read is interrupted by SIGSTOP (before or after it reads the time)."""
    from distkit.errors import WorkerLeaseLostError
    from distkit.idgen import Snowflake

    armed = threading.Event()
    main = threading.main_thread()

    def clock() -> int:
        if armed.is_set() and threading.current_thread() is main:
            armed.clear()
            if cfg["mode"] == "before":
                os.kill(os.getpid(), signal.SIGSTOP)  # paused after any check, before reading the time
                return time.time_ns() // 1_000_000
            t = time.time_ns() // 1_000_000
            os.kill(os.getpid(), signal.SIGSTOP)  # paused after reading the time, before issuing
            return t
        return time.time_ns() // 1_000_000

    gen = Snowflake.from_lease(make_lease(cfg), clock=clock)
    ids = gen.next_ids(2000)
    _write(cfg, ids=ids, phase="before-pause")
    armed.set()
    errors: list[str] = []
    try:
        ids.append(gen.next_id())  # SIGSTOP inside; the test resumes us once the successor issues ids
    except WorkerLeaseLostError as exc:
        errors.append(type(exc).__name__)
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline:
        try:
            ids.append(gen.next_id())
        except WorkerLeaseLostError as exc:
            errors.append(type(exc).__name__)
            time.sleep(0.01)
    _write(cfg, ids=ids, errors=errors, phase="done")


def hold(cfg: dict[str, Any]) -> None:
    """Issue ids until the lease is lost or ``cfg["stop"]`` exists; record when the last id was issued."""
    from distkit.errors import WorkerLeaseLostError
    from distkit.idgen import Snowflake

    gen = Snowflake.from_lease(make_lease(cfg))
    Path(cfg["ready"]).write_text(str(gen.worker_id))
    ids: list[int] = []
    error = ""
    stop = Path(cfg["stop"])
    deadline = time.monotonic() + cfg.get("max_s", 10)
    while not stop.exists() and time.monotonic() < deadline:
        try:
            ids.extend(gen.next_ids(64))
        except WorkerLeaseLostError as exc:
            error = type(exc).__name__
            break
    _write(cfg, ids=ids, error=error, stopped_at_ms=time.time_ns() // 1_000_000)


SCENARIOS = {"burst_crash": burst_crash, "pause": pause, "hold": hold}

if __name__ == "__main__":
    conf = json.loads(sys.argv[1])
    SCENARIOS[conf["scenario"]](conf)
