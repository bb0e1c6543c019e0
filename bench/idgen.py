"""Id generation throughput: distkit Snowflake/Butterfly vs the ``snowflake-id`` package, same run, one thread."""

from __future__ import annotations

import time

from bench._table import Row, print_table
from distkit.idgen import Butterfly, Snowflake


def _per_second(make_batch: object, seconds: float = 1.5) -> float:
    fn = make_batch  # a callable returning how many ids it produced
    assert callable(fn)
    for _ in range(3):
        fn()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    from snowflake import SnowflakeGenerator

    gen = Snowflake(worker_id=7, datacenter_id=1)
    bf = Butterfly(worker_id=7)
    peer = SnowflakeGenerator(7)

    def distkit_single() -> int:
        nxt = gen.next_id
        for _ in range(10_000):
            nxt()
        return 10_000

    def butterfly_single() -> int:
        nxt = bf.next_id
        for _ in range(10_000):
            nxt()
        return 10_000

    seen: set[int] = set()

    def peer_single() -> int:
        # count only ids that are new: the package returns None instead of waiting, and may repeat
        before = len(seen)
        for _ in range(10_000):
            seen.add(next(peer))
        seen.discard(None)  # type: ignore[arg-type]
        return len(seen) - before

    rows = [
        Row(
            "single id, 1 thread",
            "snowflake-id (no locking)",
            _per_second(peer_single),
            "ids/s",
            "unique non-None ids; no lock",
        ),
        Row(
            "single id, 1 thread",
            "distkit Snowflake.next_id",
            _per_second(distkit_single),
            "ids/s",
            "thread-safe, fork-aware",
        ),
        Row(
            "single id, 1 thread",
            "distkit Butterfly.next_id",
            _per_second(butterfly_single),
            "ids/s",
            "logical clock path",
        ),
        Row("batch next_ids(4096)", "layout cap (12 sequence bits)", 4_096_000, "ids/s", "4096 per ms"),
        Row(
            "batch next_ids(4096)",
            "distkit Snowflake.next_ids",
            _per_second(lambda: len(gen.next_ids(4096))),
            "ids/s",
            "goal >= 90% of cap",
        ),
        Row("batch next_ids(512)", "layout cap (9 sequence bits)", 512_000, "ids/s", "512 per ms"),
        Row(
            "batch next_ids(512)",
            "distkit Butterfly.next_ids",
            _per_second(lambda: len(bf.next_ids(512))),
            "ids/s",
            "borrows up to max_ahead_ms",
        ),
    ]
    print_table("idgen (one thread, same run)", rows)


if __name__ == "__main__":
    main()
