"""The report of a ``python -m bench`` run: ``report.md`` (one Markdown table per printed table, distkit and its
peers from the same run with the ratio column) and PNG plots from the raw samples the modules recorded.

Plots are drawn on matplotlib's ``Figure`` directly (the Agg canvas, no pyplot state, no display needed).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench._table import Recorder, Row, Series, Table, format_value, ratios

HANDOFF = "locks.handoff"  # Series.values: seconds from release() to the waiter's acquire() returning
ACCURACY = "ratelimit.accuracy"  # Series.values: seconds since start of each allowed decision; meta: rate_per_s...


ACCURACY_NOTE = (
    "\n\nA caller offers its requests evenly; *configured total* is rate x duration. Window limiters may grant a "
    "whole window's quota at once (that is their contract); distkit aligns fixed windows to the epoch (`limits`: "
    "to the key's first hit), so a run can span one window more. A token bucket spreads grants at the rate after "
    "its burst."
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    lines = [
        "| work | implementation | value | unit | ratio | note |",
        "|---|---|--:|---|--:|---|",
    ]
    for row, ratio in ratios(table.rows, table.baseline):
        ratio_s = "-" if ratio is None else f"{ratio:.2f}x"
        cells = (row.work, row.impl, format_value(row), row.unit, ratio_s, row.note)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _figure(rows: int = 1, height: float = 4.0) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, height), layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)
    return fig, [ax for (ax,) in axes]


def plot_handoff_cdf(series: Sequence[Series], path: Path) -> bool:
    """CDF of contended handoff latency per lock implementation (log x: pollers sit at ~100 ms)."""
    series = [s for s in series if s.values]
    if not series:
        return False
    fig, (ax,) = _figure()
    for s in series:
        ms = sorted(v * 1000 for v in s.values)
        n = len(ms)
        ax.step(ms, [(i + 1) / n for i in range(n)], where="post", label=f"{s.impl} (n={n})")
    ax.set_xscale("log")
    ax.set_xlabel("handoff latency: release() to the waiter's acquire() returning (ms, log scale)")
    ax.set_ylabel("fraction of handoffs")
    ax.set_title("distkit.locks: contended handoff latency CDF vs peers")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    fig.savefig(path, dpi=110)
    return True


def buckets(s: Series) -> list[int]:
    """Allowed decisions per ``bucket_s`` (default 0.1 s) bucket over the run's ``duration_s``."""
    width = float(s.meta.get("bucket_s", 0.1))
    n = max(1, round(float(s.meta["duration_s"]) / width))
    counts = [0] * n
    for t in s.values:
        i = int(round(t / width, 9))  # 0.3 / 0.1 is 2.999...: a time on a boundary opens the next bucket
        if 0 <= i < n:
            counts[i] += 1
    return counts


def plot_accuracy(series: Sequence[Series], path: Path) -> bool:
    """Allowed per 100 ms bucket over time against the configured rate, one panel per limiter."""
    if not series:
        return False
    fig, axes = _figure(len(series), height=1.9 * len(series) + 0.8)
    for ax, s in zip(axes, series, strict=True):
        width = float(s.meta.get("bucket_s", 0.1))
        counts = buckets(s)
        ax.bar([i * width for i in range(len(counts))], counts, width=width * 0.9, align="edge", label=s.impl)
        configured = float(s.meta["rate_per_s"]) * width
        label = f"configured: {configured:g} per {width * 1000:g} ms"
        ax.axhline(configured, color="crimson", linestyle="--", label=label)
        ax.set_ylabel("allowed")
        ax.legend(loc="upper right", fontsize="small")
        ax.grid(True, axis="y", alpha=0.3)
    meta = series[0].meta
    axes[0].set_title(
        f"rate limiter accuracy: {meta['rate_per_s']:g}/s configured, {meta.get('offered_per_s', '?')}/s offered, "
        f"allowed per {float(meta.get('bucket_s', 0.1)) * 1000:g} ms"
    )
    axes[-1].set_xlabel("time since start (s)")
    fig.savefig(path, dpi=110)
    return True


def accuracy_table(series: Sequence[Series]) -> str:
    lines = [
        "| limiter | allowed | configured total | mean per bucket | max per bucket | buckets over the rate |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for s in series:
        counts = buckets(s)
        width = float(s.meta.get("bucket_s", 0.1))
        per_bucket = float(s.meta["rate_per_s"]) * width
        total = float(s.meta["rate_per_s"]) * float(s.meta["duration_s"])
        over = sum(c > per_bucket for c in counts)
        lines.append(
            f"| {_cell(s.impl)} | {len(s.values)} | {total:g} | {sum(counts) / len(counts):.1f} | {max(counts)} "
            f"| {over} of {len(counts)} |"
        )
    return "\n".join(lines)


def plot_ids(tables: Sequence[Table], path: Path) -> bool:
    """Ids/s of every idgen row (distkit's generators, the snowflake-id peer, the layouts' caps)."""
    rows: list[Row] = [r for t in tables for r in t.rows if r.unit == "ids/s"]
    if not rows:
        return False
    fig, (ax,) = _figure(height=max(3.0, 0.45 * len(rows) + 1.2))
    labels = [f"{r.impl}\n({r.work})" for r in rows]
    colors = ["tab:blue" if r.impl.startswith("distkit") else "tab:gray" for r in rows]
    ax.barh(labels, [r.value / 1e6 for r in rows], color=colors)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize="small")
    ax.set_xlabel("million ids/s (blue: distkit)")
    ax.set_title("distkit.idgen: ids/s vs snowflake-id, one thread")
    ax.grid(True, axis="x", alpha=0.3)
    fig.savefig(path, dpi=110)
    return True


def write_report(
    recorder: Recorder,
    out_dir: Path,
    *,
    modules: Sequence[str],
    failed: Mapping[str, str] | None = None,
    seconds: Mapping[str, float] | None = None,
) -> list[Path]:
    """Write ``report.md`` and the plots the recorded data allows into ``out_dir``; the paths written."""
    import matplotlib

    matplotlib.use("Agg")  # no display; Figure.savefig uses Agg anyway, this keeps any pyplot import quiet
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = dict(failed or {})
    seconds = dict(seconds or {})
    written: list[Path] = []
    plots: dict[str, list[tuple[str, str, str]]] = {}  # module -> (file, alt text, text after it)

    def plot(module: str, name: str, alt: str, draw: Callable[[Path], bool], after: str = "") -> None:
        path = out_dir / name
        if draw(path):
            written.append(path)
            plots.setdefault(module, []).append((name, alt, after))

    handoff = recorder.series_named(HANDOFF)
    plot("locks", "locks_handoff_cdf.png", "lock handoff latency CDF", lambda p: plot_handoff_cdf(handoff, p))
    accuracy = recorder.series_named(ACCURACY)
    plot(
        "ratelimit",
        "ratelimit_accuracy.png",
        "rate limiter accuracy over time",
        lambda p: plot_accuracy(accuracy, p),
        accuracy_table(accuracy) + ACCURACY_NOTE if accuracy else "",
    )
    idgen_tables = [t for t in recorder.tables if t.module == "idgen"]
    plot("idgen", "idgen_throughput.png", "ids per second", lambda p: plot_ids(idgen_tables, p))

    lines = [
        "# distkit benchmark report",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}: "
        f"`python -m bench {' '.join(modules)}`.",
        "Each table is one module's output: distkit and its peers measured in the same run against the same "
        "servers. **ratio** compares a row with its group's baseline (the group's first row unless the module "
        "names one); above 1.00x is better than the baseline (for `ms`, lower latency counts as better).",
    ]
    for module in modules:
        took = f" ({seconds[module]:.0f} s)" if module in seconds else ""
        lines += ["", f"## bench.{module}{took}"]
        if module in failed:
            lines += ["", f"**failed:** `{_cell(failed[module])}`"]
        for table in (t for t in recorder.tables if t.module == module):
            baseline = f" (ratio vs `{table.baseline}`)" if table.baseline else ""
            lines += ["", f"### {table.title}{baseline}", "", markdown_table(table)]
        for name, alt, after in plots.get(module, []):
            lines += ["", f"![{alt}]({name})"]
            if after:
                lines += ["", after]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n", "utf-8")
    return [report, *written]
