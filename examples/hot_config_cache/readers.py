"""Reader threads of one service process: each reads the configuration in a loop and records what it saw."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from distkit.cache import HotKeyCache
from examples.hot_config_cache.service import CONFIG_KEY
from examples.hot_config_cache.store import versions

Segment = tuple[int, float, float]  # (version, wall time the first read of it returned, the last read started)


@dataclass
class ReaderReport:
    reads: int = 0
    torn: int = 0  # reads whose settings carried more than one version
    regressions: int = 0  # reads older than one the same reader had already seen
    finished: int = 0  # readers that saw the final version before the deadline
    segments: list[list[Segment]] = field(default_factory=list)  # per reader, the versions it saw in order
    errors: list[str] = field(default_factory=list)


def run_readers(cache: HotKeyCache, threads: int, final_version: int, *, timeout_s: float = 10.0,
                ready: threading.Event | None = None, report: ReaderReport | None = None) -> ReaderReport:
    """``threads`` readers until each has seen ``final_version`` (or ``timeout_s`` passed); ``ready`` is set once
    every reader has read once; ``report`` fills while they run."""
    report = report if report is not None else ReaderReport()
    report.segments[:] = [[] for _ in range(threads)]
    lock = threading.Lock()
    first_reads = [0]
    deadline = time.monotonic() + timeout_s

    def read_loop(seen: list[Segment]) -> tuple[int, int, int]:
        reads = torn = regressions = 0
        while time.monotonic() < deadline:
            t = time.time()
            got = versions(cache.get(CONFIG_KEY))
            done = time.time()
            reads += 1
            torn += len(got) > 1
            version = min(got)
            regressions += bool(seen) and version < seen[-1][0]
            if seen and version == seen[-1][0]:
                seen[-1] = (version, seen[-1][1], t)
            else:
                seen.append((version, done, t))
            if reads == 1:
                with lock:
                    first_reads[0] += 1
                    if first_reads[0] == threads and ready is not None:
                        ready.set()
            if version >= final_version:
                break
            time.sleep(0.002)
        return reads, torn, regressions

    def reader(n: int) -> None:
        seen = report.segments[n]
        try:
            reads, torn, regressions = read_loop(seen)
        except Exception as exc:  # counted: this reader did not finish
            with lock:
                report.errors.append(f"{type(exc).__name__}: {exc}")
            return
        with lock:
            report.reads += reads
            report.torn += torn
            report.regressions += regressions
            report.finished += bool(seen) and seen[-1][0] >= final_version

    workers = [threading.Thread(target=reader, args=(n,), name=f"config-reader-{n}") for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()) + 1.0)
    return report


def staleness(segments: list[list[Segment]], committed: dict[int, float]) -> tuple[int, float, float]:
    """Over every reader: how many (reader, save) pairs had a read of an older version *start* after the save was
    committed (an L1 copy the backplane had not dropped yet), the latest such start after its commit (s), and
    the longest time from a commit to a reader's first answer at that version or later (s)."""
    stale, late, lag = 0, 0.0, 0.0
    for seen in segments:
        for version, at in committed.items():
            after = [last - at for v, _first, last in seen if v < version and last > at]
            stale += bool(after)
            late = max([late, *after])
            first = min((f for v, f, _last in seen if v >= version), default=None)
            lag = max(lag, (first - at) if first is not None else float("inf"))
    return stale, late, lag
