"""Run every benchmark module (``bench/<name>.py`` with ``main() -> None``): ``python -m bench [name ...]``.

Each module measures distkit and the peer libraries in the same run and prints one table with a ratio
column. Servers come from the ``DISTKIT_*`` environment (``make bench`` starts them). The tables, and plots of
the samples modules record, go to ``bench/results/`` (``report.md`` + PNGs; ``DISTKIT_BENCH_RESULTS`` moves
it); a rich progress bar shows which module runs. A failing module is reported and the others still run; the
exit status is 1 if any failed.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import time
import traceback
from pathlib import Path

import bench
from bench._table import Recorder, recording


def results_dir() -> Path:
    return Path(os.environ.get("DISTKIT_BENCH_RESULTS") or Path(bench.__file__).resolve().parent / "results")


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))
    chosen = argv or names
    unknown = set(chosen) - set(names)
    if unknown:
        print(f"unknown benchmark(s) {sorted(unknown)}; have {names}", file=sys.stderr)
        return 2
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    recorder = Recorder()
    failed: dict[str, str] = {}
    seconds: dict[str, float] = {}
    columns = (SpinnerColumn(), TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, redirect_stdout=True, redirect_stderr=True) as progress:
        task = progress.add_task("bench", total=len(chosen))
        for name in chosen:
            progress.update(task, description=f"bench.{name}")
            print(f"\n##### bench.{name}", flush=True)
            t0 = time.monotonic()
            try:
                with recording(recorder, name):
                    importlib.import_module(f"bench.{name}").main()
            except (Exception, SystemExit) as exc:  # one broken module must not cost the others' numbers
                failed[name] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            seconds[name] = time.monotonic() - t0
            progress.advance(task)
        progress.update(task, description="report")
        from bench._report import write_report

        written = write_report(recorder, results_dir(), modules=chosen, failed=failed, seconds=seconds)
    cwd = Path.cwd()
    for path in written:
        print(f"wrote {path.relative_to(cwd) if path.is_relative_to(cwd) else path}")
    if failed:
        print(f"failed: {', '.join(sorted(failed))}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
