"""The ``distkit`` command.

Each command group is one module in this package exposing ``register(subparsers)``; groups are found by
listing the package, so adding ``distkit/cli/<group>.py`` is all it takes to add ``distkit <group> ...``.

Bad input (an argument argparse rejects, or a :class:`~distkit.errors.DistkitError` such as
``InvalidArgumentError`` raised by a command) prints one line, ``distkit: error: ...``, to stderr and exits 2;
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

import distkit
from distkit.errors import DistkitError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block): ``distkit: error: ... (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="distkit", description="distkit command-line tools")
    parser.add_argument("--version", action="version", version=f"distkit {distkit.__version__}",
                        help="print the distkit version and exit")
    sub = parser.add_subparsers(dest="group", metavar="<command>", parser_class=Parser)
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
    try:
        return int(handler(args) or 0)
    except DistkitError as exc:  # bad input found by the library (a range, a layout): one line, exit 2
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
