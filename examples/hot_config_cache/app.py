"""Hot configuration cache: 50 threads read the configuration through a HotKeyCache while an admin saves new
versions of it in SQL, one setting per commit. The read-write lock keeps every reload away from a half-saved
table; the cache's reload lock keeps the 50 readers from reloading 50 times."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from examples._story import Story
from examples._wiring import Wiring
from examples.hot_config_cache.readers import ReaderReport, run_readers, staleness
from examples.hot_config_cache.service import LOCAL_TTL_S, config_cache, loads, publish, settled_loads
from examples.hot_config_cache.store import SETTINGS, ConfigStore


def _all_see(report: ReaderReport, version: int, timeout_s: float) -> bool:
    """Wait (bounded) until every reader of this process has read ``version`` or a later one."""
    deadline = time.monotonic() + timeout_s
    while not all(seen and seen[-1][0] >= version for seen in report.segments):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def main(wiring: Wiring | None = None, *, readers: int = 50, refreshes: int = 5,
         on_ready: Callable[[int], None] | None = None) -> Story:
    """``on_ready(final_version)`` runs once the readers have read version 1 and before the first refresh: the
    test starts reader processes there."""
    own = wiring is None
    w = wiring if wiring is not None else Wiring.from_env()
    story = Story(f"Hot configuration cache: {readers} readers, {refreshes} refreshes of {len(SETTINGS)} settings")
    store = ConfigStore(w.engine, w.table("config"))
    store.seed()
    service, service_locks = config_cache(w, store)  # the service whose threads read the configuration
    admin, admin_locks = config_cache(w, store)  # the admin tool (another process in production)
    final = 1 + refreshes
    report, ready = ReaderReport(), threading.Event()
    running = threading.Thread(target=run_readers, args=(service, readers, final),
                               kwargs={"ready": ready, "report": report, "timeout_s": 10.0 + refreshes})
    running.start()
    try:
        started = ready.wait(10.0)
        story.step(f"{readers} readers are reading version 1 (loader calls so far: {loads(w)})")
        if on_ready is not None:
            on_ready(final)
        committed: dict[int, float] = {}
        for version in range(2, final + 1):
            publish(admin, store, version)
            committed[version] = time.time()
            seen = _all_see(report, version, 5.0)
            story.step(f"admin saved version {version}; {'every reader sees it' if seen else 'NOT SEEN'}; "
                       f"loader calls so far: {loads(w)}")
        running.join(15.0)
        total_loads = settled_loads(w, 5.0)  # a reload still finishing in the background counts too
    finally:
        for closer in (service.close, admin.close, service_locks.close, admin_locks.close):
            closer()
        if own:
            w.close()
    story.check("readers started", started, f"{readers} readers read version 1 within 10 s")
    _report(story, report, committed, readers, refreshes, total_loads)
    return story.finish()


def _report(story: Story, report: ReaderReport, committed: dict[int, float], readers: int, refreshes: int,
            total_loads: int | None) -> None:
    stale, late_s, lag_s = staleness(report.segments, committed)
    for key, value in (("reads", report.reads), ("torn", report.torn), ("regressions", report.regressions),
                       ("stale_after_commit", stale), ("latest_stale_ms", round(late_s * 1000, 1)),
                       ("max_lag_ms", round(lag_s * 1000, 1)), ("loads", total_loads), ("finished", report.finished),
                       ("errors", report.errors), ("committed_at", committed)):
        story.fact(key, value)
    story.step(f"{report.reads} reads: {report.torn} torn, {report.regressions} went back a version; {stale} times a "
               f"reader still read the older version after a save was committed; every save reached every reader "
               f"within {lag_s * 1000:.0f} ms")
    story.check("no torn configuration", report.torn == 0, f"{report.torn} reads mixed two versions")
    story.check("versions monotonic per reader", report.regressions == 0,
                f"{report.regressions} reads older than one the same reader had seen")
    # After a save, an L1 copy lives until the backplane drops it (milliseconds), at worst local_ttl_s.
    story.check("older versions end within the L1 bound", late_s < LOCAL_TTL_S and lag_s <= LOCAL_TTL_S,
                f"last older read {late_s * 1000:.0f} ms after a commit; slowest reader {lag_s * 1000:.0f} ms")
    story.check("one reload per refresh", total_loads == 1 + refreshes,
                f"loader ran {total_loads} times for 1 cold start + {refreshes} refreshes, {readers} readers"
                if total_loads is not None else "reloads still in flight 5 s after the readers stopped")
    story.check("every reader finished", report.finished == readers and not report.errors,
                f"{report.finished}/{readers} saw the final version" + (f"; {report.errors[:1]}" if report.errors
                                                                         else ""))
