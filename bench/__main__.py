"""Run every benchmark module (``bench/<name>.py`` with ``main() -> None``): ``python -m bench [name ...]``.

Each module measures distkit and the peer libraries in the same run and prints one table with a ratio
column. Servers come from the ``DISTKIT_*`` environment (``make bench`` starts them).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))
    chosen = argv or names
    unknown = set(chosen) - set(names)
    if unknown:
        print(f"unknown benchmark(s) {sorted(unknown)}; have {names}", file=sys.stderr)
        return 2
    for name in chosen:
        print(f"\n##### bench.{name}", flush=True)
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
