"""Id generation throughput: distkit Snowflake/Butterfly vs the ``snowflake-id`` package, same run, one thread.

Measured in interleaved turns (``best_rates``) so the peer and distkit share the machine's noise. The leased rows
(Redis from ``DISTKIT_REDIS_URL``, skipped without it) show what the lease's deadline check costs on the hot path:
the millisecond timestamp is compared with a cached limit, nothing else.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from bench._table import Row, best_rates, print_table
from distkit.idgen import Butterfly, IdGenerator, Snowflake

_N = 10_000


def _singles(gen: IdGenerator) -> Callable[[], None]:
    nxt = gen.next_id

    def run() -> None:
        for _ in range(_N):
            nxt()

    return run


def _leased() -> tuple[Any, IdGenerator, IdGenerator] | None:
    from distkit.config import Settings

    settings = Settings.from_env()
    if not settings.redis_url:
        return None
    from distkit.idgen import RedisWorkerLease

    client = settings.redis()
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    leased = Snowflake.from_lease(RedisWorkerLease(client, ns, ttl_s=1.0))
    leased_bf = Butterfly.from_lease(RedisWorkerLease(client, ns + "-bf", ttl_s=1.0))
    return client, leased, leased_bf


def main() -> None:
    from snowflake import SnowflakeGenerator

    gen = Snowflake(worker_id=7, datacenter_id=1)
    bf = Butterfly(worker_id=7)
    peer = SnowflakeGenerator(7)
    nxt_peer = peer.__next__

    def peer_single() -> None:
        for _ in range(_N):
            nxt_peer()  # may return None instead of waiting (counted anyway: flatters the peer)

    leased = _leased()
    singles: list[tuple[str, Callable[[], None]]] = [
        ("peer", peer_single),
        ("snowflake", _singles(gen)),
        ("butterfly", _singles(bf)),
    ]
    if leased is not None:
        singles.append(("leased", _singles(leased[1])))
    single = best_rates(singles, per_call=_N, rounds=8, seconds=4)
    batch = best_rates([("sf4096", lambda: gen.next_ids(4096))], per_call=4096, rounds=3, seconds=1.5)
    bf_batch = best_rates([("bf512", lambda: bf.next_ids(512))], per_call=512, rounds=3, seconds=1.5)

    rows = [
        Row("single id, 1 thread", "snowflake-id (no locking)", single["peer"], "ids/s", "no lock; None on rollback"),
        Row("single id, 1 thread", "distkit Snowflake.next_id", single["snowflake"], "ids/s", "goal >= 1M/s, >= 0.5x"),
        Row("single id, 1 thread", "distkit Butterfly.next_id", single["butterfly"], "ids/s", "logical clock path"),
    ]
    if leased is not None:
        rows.append(
            Row("single id, 1 thread", "distkit Snowflake leased (Redis)", single["leased"], "ids/s", "deadline check")
        )
    rows += [
        Row("batch next_ids(4096)", "layout cap (12 sequence bits)", 4_096_000, "ids/s", "4096 per ms"),
        Row("batch next_ids(4096)", "distkit Snowflake.next_ids", batch["sf4096"], "ids/s", "goal >= 90% of cap"),
        Row("batch next_ids(512)", "layout cap (9 sequence bits)", 512_000, "ids/s", "512 per ms"),
        Row("batch next_ids(512)", "distkit Butterfly.next_ids", bf_batch["bf512"], "ids/s", "static: never ahead"),
    ]
    if leased is not None:
        lbf = leased[2]
        leased_batch = best_rates([("lbf", lambda: lbf.next_ids(512))], per_call=512, rounds=3, seconds=1.5)
        rows.append(
            Row("batch next_ids(512)", "distkit Butterfly leased (Redis)", leased_batch["lbf"], "ids/s", "may borrow")
        )
        leased[1].close()
        lbf.close()
        leased[0].close()
    print_table("idgen (one thread, same run)", rows)


if __name__ == "__main__":
    main()
