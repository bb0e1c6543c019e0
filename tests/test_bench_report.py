"""Issue 22: ``python -m bench`` keeps every printed table and recorded sample, and writes ``report.md`` plus
PNG plots from them (bench/_report.py); the docs site embeds that report (bench/_site.py) and renders docstring
doctests as code (bench/_griffe.py). Synthetic rows and samples only: the benchmarks themselves never run here."""

from __future__ import annotations

import re

import pytest

from bench._griffe import markdown_docstring
from bench._report import ACCURACY, HANDOFF, buckets, write_report
from bench._site import embed
from bench._table import Recorder, Row, Series, print_table, ratios, record_series, recording

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_ratios_compare_each_row_with_its_groups_baseline_and_invert_latencies():
    rows = [
        Row("put", "peer", 100.0),
        Row("put", "distkit", 250.0),
        Row("p50", "distkit", 2.0, "ms"),
        Row("p50", "redis-py", 8.0, "ms"),
        Row("p50", "broken", 0.0, "ms"),
    ]
    got = [(r.impl, ratio) for r, ratio in ratios(rows, baseline="redis-py")]
    # "put" has no redis-py row: its first row is the baseline; for ms a 4x lower latency reads as 4.00x
    assert got == [("peer", 1.0), ("distkit", 2.5), ("distkit", 4.0), ("redis-py", 1.0), ("broken", None)]


def test_print_table_and_record_series_feed_the_active_recorder_only(capsys):
    rows = [Row("single id", "snowflake-id", 1_000_000, "ids/s"), Row("single id", "distkit", 1_500_000, "ids/s")]
    print_table("outside", rows)
    record_series(HANDOFF, "distkit", [0.001])  # no recorder active: a no-op, as in `python bench/locks.py`
    recorder = Recorder()
    with recording(recorder, "idgen"):
        print_table("idgen (same run)", rows, baseline="snowflake")
        record_series(HANDOFF, "distkit", [0.001, 0.002], note="x")
    print_table("after", rows)
    assert [(t.module, t.title, t.baseline, len(t.rows)) for t in recorder.tables] == [
        ("idgen", "idgen (same run)", "snowflake", 2)
    ]
    assert recorder.series == [Series("idgen", HANDOFF, "distkit", [0.001, 0.002], {"note": "x"})]
    out = capsys.readouterr().out
    assert out.count("1.50x") == 3  # the console table is unchanged, recorded or not


def test_buckets_count_allowed_decisions_per_100_ms_over_the_run():
    s = Series("ratelimit", ACCURACY, "x", [0.0, 0.05, 0.099, 0.1, 0.35, 0.999, 1.0, 1.2], {"duration_s": 1.0})
    assert buckets(s) == [3, 1, 0, 1, 0, 0, 0, 0, 0, 1]  # 1.0 and 1.2 fall after the run


def _recorder() -> Recorder:
    recorder = Recorder()
    with recording(recorder, "idgen"):
        print_table(
            "idgen (one thread, same run)",
            [
                Row("single id, 1 thread", "snowflake-id (no locking)", 2_000_000, "ids/s", "peer"),
                Row("single id, 1 thread", "distkit Snowflake.next_id", 3_000_000, "ids/s", "a | b"),
            ],
        )
    with recording(recorder, "locks"):
        for impl, base in (("distkit", 0.0004), ("redis-py", 0.05)):
            record_series(HANDOFF, impl, [base * (1 + i / 50) for i in range(50)])
        print_table("locks", [Row("handoff p50", "redis-py", 50.0, "ms"), Row("handoff p50", "distkit", 0.5, "ms")],
                    baseline="redis-py")
    with recording(recorder, "ratelimit"):
        steady = [i / 100 for i in range(300)]  # 100/s for 3 s: 10 per bucket
        bursty = [s + i / 1000 for s in (0.0, 1.0, 2.0) for i in range(100)]  # a window's quota in 100 ms
        for impl, times in (("distkit TokenBucket", steady), ("limits FixedWindow", bursty)):
            record_series(ACCURACY, impl, times, rate_per_s=100, offered_per_s=500, duration_s=3.0, bucket_s=0.1)
    return recorder


def test_the_report_has_one_table_per_printed_table_the_ratios_and_a_png_per_plot(tmp_path):
    written = write_report(
        _recorder(), tmp_path, modules=["idgen", "locks", "ratelimit", "saga"], failed={"saga": "RuntimeError: x"},
        seconds={"idgen": 41.2},
    )
    names = sorted(p.name for p in written)
    assert names == ["idgen_throughput.png", "locks_handoff_cdf.png", "ratelimit_accuracy.png", "report.md"]
    for path in written:
        if path.suffix == ".png":
            width, height = _png_size(path.read_bytes())
            assert width >= 600 and height >= 300
    report = (tmp_path / "report.md").read_text("utf-8")
    assert re.findall(r"^## .*$", report, re.M) == [
        "## bench.idgen (41 s)", "## bench.locks", "## bench.ratelimit", "## bench.saga",
    ]
    assert "| single id, 1 thread | distkit Snowflake.next_id | 3,000,000 | ids/s | 1.50x | a \\| b |" in report
    assert "| handoff p50 | distkit | 0.500 | ms | 100.00x |  |" in report
    assert "### locks (ratio vs `redis-py`)" in report
    assert "**failed:** `RuntimeError: x`" in report
    assert report.count("![") == 3 and "![lock handoff latency CDF](locks_handoff_cdf.png)" in report
    # the accuracy summary: 300 allowed each; the bursty limiter exceeds the per-bucket rate in 3 of 30 buckets
    assert "| distkit TokenBucket | 300 | 300 | 10.0 | 10 | 0 of 30 |" in report
    assert "| limits FixedWindow | 300 | 300 | 10.0 | 100 | 3 of 30 |" in report


def test_a_run_without_samples_writes_the_tables_and_no_plot(tmp_path):
    recorder = Recorder()
    with recording(recorder, "saga"):
        print_table("saga", [Row("run", "distkit", 10.0)])
    written = write_report(recorder, tmp_path, modules=["saga"])
    assert [p.name for p in written] == ["report.md"]
    assert list(tmp_path.iterdir()) == [tmp_path / "report.md"]
    assert "| run | distkit | 10 | ops/s | 1.00x |  |" in (tmp_path / "report.md").read_text("utf-8")


def test_the_site_embeds_the_report_one_heading_level_deeper_with_images_published_under_bench_results():
    report = "# distkit benchmark report\n\nRun x.\n\n## bench.locks\n\n### t\n\n![cdf](locks_handoff_cdf.png)\n"
    assert embed(report) == "Run x.\n\n### bench.locks\n\n#### t\n\n![cdf](bench-results/locks_handoff_cdf.png)\n"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "Ids.\n\n>>> gen = Snowflake(1)   # doctest: +SKIP\n>>> gen.decode(i)\n[{'a': 1}]\n\nAfter.",
            "Ids.\n\n```pycon\n>>> gen = Snowflake(1)\n>>> gen.decode(i)\n[{'a': 1}]\n```\n\nAfter.",
        ),
        (
            "Use :class:`Locks` or :meth:`~distkit.locks.Locks.lock` (:exc:`distkit.errors.LockError`).",
            "Use `Locks` or `lock` (`distkit.errors.LockError`).",
        ),
        ("    >>> x = 1\n    ... y", "    ```pycon\n    >>> x = 1\n    ... y\n    ```"),
    ],
)
def test_docstring_doctests_become_pycon_blocks_and_sphinx_roles_inline_code(source, expected):
    assert markdown_docstring(source) == expected
