"""mkdocs hook (``hooks:`` in mkdocs.yml): the docs site's Benchmarks page shows ``bench/results/``.

``make bench`` writes ``report.md`` and its PNG plots there (git-ignored: they belong to the machine that ran
them). The page's ``<!-- bench-report -->`` marker becomes the report, and each PNG is published under
``bench-results/``; without a report the marker becomes a note, so ``mkdocs build --strict`` passes either way.
``DISTKIT_BENCH_RESULTS`` points the site at another results directory (the docs-site test uses it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

MARKER = "<!-- bench-report -->"
PAGE = "benchmarks.md"
URI_DIR = "bench-results"


def results_dir() -> Path:
    default = Path(__file__).resolve().parent / "results"
    return Path(os.environ.get("DISTKIT_BENCH_RESULTS") or default)


def embed(report: str) -> str:
    """The report as part of the Benchmarks page: its title dropped (the page has one), every heading one level
    deeper, and image links pointed at where the PNGs are published."""
    lines = report.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    out = []
    for line in lines:
        deeper = "#" + line if re.match(r"^#{1,5} ", line) else line
        out.append(re.sub(r"!\[([^\]]*)\]\(([^)/]+\.png)\)", rf"![\1]({URI_DIR}/\2)", deeper))
    return "\n".join(out).strip() + "\n"


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    results = results_dir()
    if results.is_dir():
        for png in sorted(results.glob("*.png")):
            files.append(File.generated(config, f"{URI_DIR}/{png.name}", abs_src_path=str(png)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != PAGE or MARKER not in markdown:
        return markdown
    report = results_dir() / "report.md"
    if report.is_file():
        body = embed(report.read_text("utf-8"))
    else:
        body = (
            "!!! note \"No results on this build\"\n"
            "    `bench/results/report.md` does not exist yet: run `make bench`, then `make docs`.\n"
        )
    return markdown.replace(MARKER, body)
