"""The ``distkit`` command.

Each command group is one module in this package exposing ``register(subparsers)``; groups are found by
listing the package, so adding ``distkit/cli/<group>.py`` is all it takes to add ``distkit <group> ...``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import distkit


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distkit", description="distkit command-line tools")
    parser.add_argument("--version", action="version", version=f"distkit {distkit.__version__}")
    sub = parser.add_subparsers(dest="group", metavar="<command>")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``distkit`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0 if args.group is None else 2
    return int(handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
