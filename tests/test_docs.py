"""Issue 16 §6: every ```python block of README.md and docs/*.md runs, as written, in the suite.

Blocks run with Sybil (https://sybil.readthedocs.io), in order, one namespace per file (a block may use what an
earlier block of the same file defined), with the ``DISTKIT_*`` environment of ``make test``. A file that uses
``Settings.from_env()`` needs the services like the rest of the suite: skipped without them, an error under
``DISTKIT_REQUIRE_SERVICES=1``. A block that is not meant to run must be fenced as ```text or ```bash.

``KNOWN_FAILING`` below lists the docs that do not run yet (they are being rewritten); each runs anyway and
is reported as xfail / xpass (strict=False): drop an entry once its file passes.
"""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import pytest
from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SERVICE_ENV = ("DISTKIT_REDIS_URL", "DISTKIT_REDIS_CLUSTER_NODES", "DISTKIT_DATABASE_URL", "DISTKIT_KAFKA_BOOTSTRAP")

# ------------------------------------------------------------------ the list to shrink (path -> why it fails)
KNOWN_FAILING: dict[str, str] = {
}
# ------------------------------------------------------------------

# info strings a fenced block may carry; python is the only one that runs
ALLOWED_FENCES = {
    "python", "text", "bash", "console", "shell", "sql", "toml", "json", "yaml", "ini", "lua", "diff", "mermaid",
}

SYBIL = Sybil(parsers=[PythonCodeBlockParser()])


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _fences(path: Path) -> list[tuple[int, str]]:
    """(line, info string) of each opening fence."""
    out, open_fence = [], None
    for lineno, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        m = re.match(r"^\s*(`{3,}|~{3,})\s*([^`\s]*)[^`]*$", line)
        if not m:
            continue
        if open_fence is None:
            open_fence = m.group(1)
            out.append((lineno, m.group(2)))
        elif m.group(1).startswith(open_fence) and not m.group(2):
            open_fence = None
    return out


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_every_fenced_block_says_whether_it_runs(path):
    bad = [f"{_rel(path)}:{line} ```{info}" for line, info in _fences(path) if info not in ALLOWED_FENCES]
    assert bad == [], "fence each block as ```python (runs in the suite) or ```text / ```bash (does not)"


def run_document(path: Path) -> int:
    """Run the ```python blocks of ``path`` in order in one fresh module namespace; the number of blocks run.
    A failing block raises ``AssertionError`` naming its line."""
    document = SYBIL.parse(path)
    name = "distkit_docs_" + re.sub(r"\W", "_", str(path))
    module = types.ModuleType(name)  # a real module, so dataclasses and pickling work in the blocks
    module.__file__ = str(path)
    sys.modules[name] = module
    document.namespace = module.__dict__
    ran = 0
    try:
        for example in document:
            try:
                example.evaluate()
            except Exception as exc:
                raise AssertionError(f"{path.name}:{example.line}: the block starting here failed: {exc!r}") from exc
            ran += 1
    finally:
        del sys.modules[name]
        document.namespace.clear()
    return ran


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_python_blocks_run_in_order(path, request):
    rel = _rel(path)
    if rel in KNOWN_FAILING:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_FAILING[rel], strict=False))
    if "from_env" in path.read_text("utf-8"):
        missing = [env for env in SERVICE_ENV if not os.environ.get(env)]
        if missing:
            msg = f"{rel} needs the services: {', '.join(missing)} unset (run `make test`)"
            if os.environ.get("DISTKIT_REQUIRE_SERVICES") == "1":
                pytest.fail(msg + " [DISTKIT_REQUIRE_SERVICES=1]", pytrace=False)
            pytest.skip(msg)
    ran = run_document(path)
    if rel == "README.md":
        assert ran >= 2


def test_the_harness_runs_blocks_in_order_in_one_namespace_per_file_and_reports_the_failing_line(tmp_path):
    first = tmp_path / "first.md"
    first.write_text(
        "# t\n\n```python\nimport dataclasses\n\n@dataclasses.dataclass\nclass P:\n    x: int\n\nseen = [P(1)]\n```\n\n"
        "```text\nnot python: never runs\n```\n\n```bash\nexit 1\n```\n\n"
        "```python\nseen.append(P(2))\nassert [p.x for p in seen] == [1, 2]\n```\n"
    )
    assert run_document(first) == 2
    second = tmp_path / "second.md"
    second.write_text("```python\nok = 1\n```\n\nline\n\n```python\nprint(seen)\n```\n")
    with pytest.raises(AssertionError, match=r"second\.md:7: the block starting here failed: NameError"):
        run_document(second)  # `seen` belongs to first.md's namespace only
    assert _fences(first) == [(3, "python"), (13, "text"), (17, "bash"), (21, "python")]
