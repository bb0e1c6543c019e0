"""Shared benchmark helpers: time a callable, print distkit and its peers in one table with a ratio column."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass
class Row:
    work: str
    impl: str
    value: float
    unit: str = "ops/s"
    note: str = ""


def rate(fn: Callable[[], object], *, seconds: float = 1.0, per_call: int = 1, warmup: int = 50) -> float:
    """Calls of ``fn`` per second (times ``per_call`` items per call), measured over about ``seconds``."""
    for _ in range(warmup):
        fn()
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        fn()
        n += 1
        if n % 16 == 0 and time.perf_counter() >= deadline:
            break
    return n * per_call / (time.perf_counter() - t0)


def best_rates(
    candidates: Sequence[tuple[str, Callable[[], object]]], *, rounds: int = 5, seconds: float = 1.5, per_call: int = 1
) -> dict[str, float]:
    """Calls/s of each candidate, measured in ``rounds`` interleaved turns (A B A B ...) of ``seconds / rounds``
    each, keeping each one's best turn. On a shared 2-core machine a single timed run swings by 20-40 %;
    interleaving gives peers and distkit the same noise and the best turn shows what the code can do."""
    best = dict.fromkeys((name for name, _ in candidates), 0.0)
    for _, fn in candidates:
        rate(fn, seconds=0.05, warmup=1)  # warm up every candidate before the first timed turn
    for _ in range(rounds):
        for fn_name, fn in candidates:
            best[fn_name] = max(best[fn_name], rate(fn, seconds=seconds / rounds, per_call=per_call, warmup=0))
    return best


def percentiles(samples_s: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) of latency samples in seconds, returned in milliseconds."""
    ordered = sorted(samples_s)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 * 1000, p99 * 1000


def print_table(title: str, rows: Sequence[Row], *, baseline: str | None = None) -> None:
    """Print rows grouped by ``work``; the ratio column compares each row to the group's ``baseline`` impl
    (default: the group's first row). For latency units (``ms``) lower is better, so the ratio is inverted."""
    print(f"\n{title}")
    header = f"{'work':38} {'implementation':34} {'value':>14} {'unit':10} {'ratio':>7}  note"
    print(header)
    print("-" * len(header))
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.work, []).append(r)
    for work, group in groups.items():
        base = next((r for r in group if baseline and r.impl.startswith(baseline)), group[0])
        for r in group:
            if base.value and r.value:
                ratio = base.value / r.value if r.unit == "ms" else r.value / base.value
                ratio_s = f"{ratio:6.2f}x"
            else:
                ratio_s = "     -"
            value = f"{r.value:,.3f}" if r.unit == "ms" else f"{r.value:,.0f}"
            print(f"{work:38} {r.impl:34} {value:>14} {r.unit:10} {ratio_s:>7}  {r.note}")
    print(flush=True)
