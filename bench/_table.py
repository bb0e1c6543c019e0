"""Shared benchmark helpers: time a callable, print distkit and its peers in one table with a ratio column.

Inside ``with recording(recorder, module)`` every printed table, and every latency or time series a module hands
to :func:`record_series`, is also kept in ``recorder``; ``python -m bench`` writes them to bench/results/.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


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


@dataclass
class Table:
    """One printed table: which bench module printed it, its rows and the impl the ratio column compares to."""

    module: str
    title: str
    rows: list[Row]
    baseline: str | None = None


@dataclass
class Series:
    """Raw samples behind a plot, e.g. every handoff latency of one lock implementation (``values``) and what
    the plot needs to read them (``meta``: the configured rate, the run's duration ...)."""

    module: str
    name: str
    impl: str
    values: list[float]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recorder:
    tables: list[Table] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)

    def series_named(self, name: str) -> list[Series]:
        return [s for s in self.series if s.name == name]


_ACTIVE: ContextVar[tuple[Recorder, str] | None] = ContextVar("bench_recorder", default=None)


@contextmanager
def recording(recorder: Recorder, module: str) -> Iterator[Recorder]:
    """Keep what bench module ``module`` prints (and its :func:`record_series`) in ``recorder`` meanwhile."""
    token = _ACTIVE.set((recorder, module))
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)


def record_series(name: str, impl: str, values: Sequence[float], **meta: Any) -> None:
    """Hand raw samples to the active recorder (a no-op outside :func:`recording`, e.g. ``python bench/x.py``)."""
    active = _ACTIVE.get()
    if active is not None:
        recorder, module = active
        recorder.series.append(Series(module, name, impl, list(values), dict(meta)))


def ratios(rows: Sequence[Row], baseline: str | None = None) -> list[tuple[Row, float | None]]:
    """Each row with its ratio to its ``work`` group's ``baseline`` impl (default: the group's first row), rows
    grouped by ``work`` in first-seen order. For latency units (``ms``) lower is better, so the ratio is inverted;
    ``None`` where either value is 0."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.work, []).append(r)
    out: list[tuple[Row, float | None]] = []
    for group in groups.values():
        base = next((r for r in group if baseline and r.impl.startswith(baseline)), group[0])
        for r in group:
            ratio = None
            if base.value and r.value:
                ratio = base.value / r.value if r.unit == "ms" else r.value / base.value
            out.append((r, ratio))
    return out


def format_value(row: Row) -> str:
    return f"{row.value:,.3f}" if row.unit == "ms" else f"{row.value:,.0f}"


def print_table(title: str, rows: Sequence[Row], *, baseline: str | None = None) -> None:
    """Print rows grouped by ``work``; the ratio column compares each row to the group's ``baseline`` impl
    (default: the group's first row). For latency units (``ms``) lower is better, so the ratio is inverted."""
    active = _ACTIVE.get()
    if active is not None:
        recorder, module = active
        recorder.tables.append(Table(module, title, list(rows), baseline))
    print(f"\n{title}")
    header = f"{'work':38} {'implementation':34} {'value':>14} {'unit':10} {'ratio':>7}  note"
    print(header)
    print("-" * len(header))
    for r, ratio in ratios(rows, baseline):
        ratio_s = "     -" if ratio is None else f"{ratio:6.2f}x"
        print(f"{r.work:38} {r.impl:34} {format_value(r):>14} {r.unit:10} {ratio_s:>7}  {r.note}")
    print(flush=True)
