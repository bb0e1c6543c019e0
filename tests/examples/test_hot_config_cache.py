"""The hot configuration cache on real Redis and PostgreSQL: no torn or stale configuration, versions never go
back, exactly one loader call per save across all processes, every reader finishes — with reader threads in
the app's process and in two more processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from examples._wiring import Wiring
from examples.hot_config_cache import main
from examples.hot_config_cache.readers import staleness
from examples.hot_config_cache.service import (
    CONFIG_KEY,
    LOCAL_TTL_S,
    config_cache,
    loads,
    publish,
    reload_lock_key,
    settled_loads,
)
from examples.hot_config_cache.store import ConfigStore, versions

ROOT = Path(__file__).resolve().parents[2]
INVARIANTS = {"readers started", "no torn configuration", "versions monotonic per reader",
              "older versions end within the L1 bound", "one reload per refresh", "every reader finished"}


def test_fifty_readers_one_writer_one_reload_per_refresh(wiring: Wiring) -> None:
    story = main(wiring, readers=50, refreshes=5)
    assert story.checks == dict.fromkeys(INVARIANTS, True)
    facts = story.facts
    assert facts["loads"] == 6  # 1 cold load + 1 per refresh, not 1 per reader
    assert facts["torn"] == 0 and facts["regressions"] == 0
    assert facts["finished"] == 50 and facts["errors"] == []
    reads = facts["reads"]
    assert isinstance(reads, int) and reads >= 2 * 50  # every reader read version 1 and version 6 at least


def test_reader_processes_share_the_one_reload_per_refresh(wiring: Wiring, pg_schema: str) -> None:
    env = {**os.environ, "PGOPTIONS": f"-csearch_path={pg_schema}", "PYTHONPATH": str(ROOT)}
    env.pop("DISTKIT_KAFKA_BOOTSTRAP", None)  # the readers need Redis and PostgreSQL only
    procs: list[subprocess.Popen[str]] = []

    def start_reader_processes(final_version: int) -> None:
        cmd = [sys.executable, "-m", "examples.hot_config_cache.reader_process", wiring.namespace, "25",
               str(final_version)]
        for _ in range(2):
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True))
        for p in procs:  # each prints "ready" once its 25 readers have read version 1 (from Redis: no load)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    try:
        story = main(wiring, readers=25, refreshes=5, on_ready=start_reader_processes)
        outs = [p.communicate(timeout=30)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0]
    assert story.checks == dict.fromkeys(INVARIANTS, True)
    # one loader call per save for 75 readers in 3 processes: the counter lives in Redis, so it counts them all
    assert story.facts["loads"] == 6
    committed: Any = story.facts["committed_at"]
    assert sorted(committed) == [2, 3, 4, 5, 6]
    for out in outs:
        report = json.loads(out)
        assert (report["torn"], report["regressions"], report["finished"], report["errors"]) == (0, 0, 25, [])
        _stale, late_s, lag_s = staleness(report["segments"], committed)
        assert late_s < LOCAL_TTL_S and lag_s <= LOCAL_TTL_S  # no process kept serving an older version


@pytest.mark.parametrize("rw_lock", [True, False])
def test_a_process_starting_during_a_save_never_caches_half_of_it(wiring: Wiring, rw_lock: bool) -> None:
    """The read-write lock is what makes it safe: without it the same reload caches a torn configuration."""
    store = ConfigStore(wiring.engine, wiring.table("config"))
    store.seed()
    admin, admin_locks = config_cache(wiring, store, rw_lock=rw_lock)
    saver = threading.Thread(target=publish, args=(admin, store, 2), kwargs={"pause_s": 0.3})
    saver.start()
    deadline = time.monotonic() + 5
    while versions(store.read()) != {1, 2}:  # the save is half done: the first setting is committed
        assert time.monotonic() < deadline
        time.sleep(0.002)
    late, late_locks = config_cache(wiring, store, rw_lock=rw_lock)  # a service process starting now
    try:
        first = versions(late.get(CONFIG_KEY))
        saver.join()
        again = versions(late.get(CONFIG_KEY))
    finally:
        for closer in (late.close, admin.close, late_locks.close, admin_locks.close):
            closer()
    assert loads(wiring) == 1
    if rw_lock:
        assert first == again == {2}  # its reload waited for the whole save
    else:
        assert first == again == {1, 2}  # torn, and cached: served until the TTL ends


def test_the_count_waits_for_a_reload_still_in_flight(wiring: Wiring) -> None:
    """A reload that has started but not yet called the loader (it waits for the read lock) is not in the counter
    yet: counting at once would miss it; the app counts once no reload is in flight."""
    store = ConfigStore(wiring.engine, wiring.table("config"))
    store.seed()
    admin, admin_locks = config_cache(wiring, store)
    late, late_locks = config_cache(wiring, store)  # a service process with nothing cached
    got: list[set[int]] = []
    reader = threading.Thread(target=lambda: got.append(versions(late.get(CONFIG_KEY))))
    try:
        with admin.write_lock(CONFIG_KEY):  # the admin is saving version 2
            store.save(2, pause_s=0)
            reader.start()
            deadline = time.monotonic() + 5
            while not wiring.redis.exists(reload_lock_key(wiring)):  # the reader's reload has started
                assert time.monotonic() < deadline
                time.sleep(0.002)
            assert loads(wiring) == 0  # ... and is not counted yet: it waits for the read lock
            assert settled_loads(wiring, timeout_s=0.2) is None  # in flight: no count yet
        reader.join(10)
        assert got == [{2}]
        assert settled_loads(wiring, timeout_s=5) == 1
    finally:
        for closer in (late.close, admin.close, late_locks.close, admin_locks.close):
            closer()
