"""One flash sale: every buyer is a thread; all wait for the doors to open, then request at the same instant.

The shop is a server with a bounded pool of worker threads, like any web server: 1000 requests in flight at once
would need 1000 Redis and database connections, and redis-py's default pool (100 connections) fails fast when
it runs out. The buyers' requests queue for a worker, and each buyer waits for its answer.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from examples.flash_sale.shop import SOLD, SOLD_OUT


@dataclass
class SaleResult:
    """What the buyers were told (per request) and how long it took."""

    answers: dict[str, list[str]] = field(default_factory=dict)  # order id -> one answer per delivery
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def final(self, order_id: str) -> str:
        """The buyer's outcome over all deliveries of its request: sold beats sold out beats try later."""
        got = self.answers[order_id]
        return SOLD if SOLD in got else SOLD_OUT if SOLD_OUT in got else got[0]

    def outcomes(self) -> Counter[str]:
        return Counter(self.final(o) for o in self.answers)

    def percentile_ms(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


def run_sale(buy: Callable[[str], str], buyers: int, *, deliveries: int = 1, prefix: str = "order", workers: int = 64,
             watch: Callable[[], None] | None = None, timeout_s: float = 60.0) -> SaleResult:
    """``buyers`` orders, each request delivered ``deliveries`` times concurrently (a duplicate from a retrying
    client or gateway) to a server of ``workers`` threads; ``watch()`` runs every few ms meanwhile, and once after."""
    result = SaleResult(answers={f"{prefix}-{i}": [] for i in range(buyers)})
    lock = threading.Lock()
    doors = threading.Event()
    done = threading.Event()
    orders = list(result.answers)
    random.shuffle(orders)
    # a duplicate arrives right behind its original (a gateway that retried too early), so the two race
    requests = [o for o in orders for _ in range(deliveries)]
    server = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shop-worker")

    def request(order_id: str) -> None:
        doors.wait()
        t0 = time.perf_counter()
        try:
            answer = server.submit(buy, order_id).result(timeout_s)
        except Exception as exc:  # reported, never swallowed: the check "one answer each" fails on it
            answer = f"error: {type(exc).__name__}: {exc}"
        with lock:
            result.latencies_ms.append((time.perf_counter() - t0) * 1000)
            result.answers[order_id].append(answer)

    def watch_sale() -> None:
        assert watch is not None
        while not done.wait(0.005):
            watch()

    threads = [threading.Thread(target=request, args=(o,), daemon=True) for o in requests]
    for t in threads:
        t.start()
    watcher = threading.Thread(target=watch_sale, daemon=True) if watch else None
    t0 = time.perf_counter()
    doors.set()
    if watcher:
        watcher.start()
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    result.seconds = time.perf_counter() - t0
    done.set()
    server.shutdown(wait=False, cancel_futures=True)
    if watcher:
        watcher.join()
    if watch:
        watch()  # the final state, once every answer is in
    return result
