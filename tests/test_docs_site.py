"""Issue 22: the docs site (mkdocs.yml) builds with ``mkdocs build --strict`` - every nav page exists, no broken
link, no docstring griffe cannot read - and its API reference really documents distkit's public names.

CI runs only ``make lint`` and ``make test``, so ``make docs`` is checked here: one build (~3 s) into a temp
dir, with a synthetic benchmark report so the Benchmarks page's embedding of bench/results/ is built too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")
pytestmark = pytest.mark.slow  # one build: ~3 s of CPU, up to ~10 s wall on a busy 2-core machine

ROOT = Path(__file__).resolve().parent.parent

# page -> names its API reference must document (an anchor per documented object)
API = {
    "idgen": ["Snowflake", "Butterfly", "RedisWorkerLease", "Snowflake.next_id"],
    "locks": ["Locks", "Lock", "AsyncLocks", "Semaphore", "Locks.lock"],
    "ratelimit": ["TokenBucket", "SlidingWindowLog", "RedisBackend", "Rate"],
    "idempotency": ["idempotent", "RedisIdempotencyStore"],
    "messaging": ["InMemoryBroker", "TransactionalProcessor", "KafkaBroker"],
    "saga": [],
    "tracing": [],
    "gateway": ["JwtVerifier", "Gateway"],
    "stock": ["Stock"],
    "cache": ["HotKeyCache"],
    "resilience": ["CircuitBreaker", "Bulkhead"],
    "testing": ["FakeClock"],
    "config": ["Settings"],
    "errors": ["DistkitError"],
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench._report import HANDOFF, write_report
    from bench._table import Recorder, Row, print_table, record_series, recording

    results = tmp_path_factory.mktemp("bench-results")
    recorder = Recorder()
    with recording(recorder, "locks"):
        record_series(HANDOFF, "distkit", [0.0004 + i / 100_000 for i in range(40)])
        print_table("locks", [Row("handoff p50", "redis-py", 50.0, "ms"), Row("handoff p50", "distkit", 0.5, "ms")])
    write_report(recorder, results, modules=["locks"])

    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "DISTKIT_BENCH_RESULTS": str(results), "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"
    assert "WARNING" not in proc.stderr
    return out


def _html(site: Path, page: str) -> str:
    return (site / page / "index.html").read_text("utf-8")


@pytest.mark.parametrize("pkg", sorted(API))
def test_every_public_package_has_an_api_page_documenting_its_names(site: Path, pkg: str) -> None:
    anchors = set(re.findall(r'id="(distkit\.[\w.]+)"', _html(site, f"api/{pkg}")))
    assert f"distkit.{pkg}" in anchors  # the module itself, with its docstring
    missing = [name for name in API[pkg] if f"distkit.{pkg}.{name}" not in anchors]
    assert missing == []
    assert len(anchors) >= 3, f"distkit.{pkg}: only {sorted(anchors)}"


def test_every_package_of_distkit_is_in_the_api_reference(site: Path) -> None:
    packages = {p.parent.name for p in (ROOT / "distkit").glob("*/__init__.py") if not p.parent.name.startswith("_")}
    assert packages - {"cli"} <= set(API)  # the CLI is documented by `distkit --help`


def test_docstring_doctests_render_as_code_not_as_links(site: Path) -> None:
    html = _html(site, "api/messaging")
    # the module docstring's `[{'order_id': 42}]` output line: highlighted output of a pycon block, not a link
    assert html.count('<span class="gp">&gt;&gt;&gt; </span>') >= 4
    assert """<span class="go">[{'order_id': 42}]</span>""" in html


def test_guides_getting_started_mermaid_and_the_embedded_benchmark_report(site: Path) -> None:
    index = _html(site, ".")
    assert "make demo" in index and "make test" in index and "distkit[redis]" in index
    assert 'class="mermaid"' in _html(site, "saga")  # a diagram, not a code block
    bench = _html(site, "benchmarks")
    assert "handoff p50" in bench and "100.00x" in bench
    assert re.search(r'<img alt="lock handoff latency CDF" src="\.\./bench-results/locks_handoff_cdf\.png"', bench)
    assert (site / "bench-results" / "locks_handoff_cdf.png").read_bytes()[:4] == b"\x89PNG"
