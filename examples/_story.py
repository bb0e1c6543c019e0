"""The narrative an example prints, and the invariants it checks at the end.

An app calls :meth:`Story.step` as things happen and :meth:`Story.check` for each invariant; the run fails
(``python -m examples`` exits non-zero) if any check is false. Tests assert on :attr:`Story.checks`, never on
the printed text.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


class InvariantFailed(AssertionError):
    """An example's own invariant did not hold (the names of the failed checks are in the message)."""


@dataclass
class Story:
    """Prints ``  0.12s  step text`` lines and collects named invariant checks."""

    title: str
    out: TextIO = field(default_factory=lambda: sys.stdout)
    checks: dict[str, bool] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        print(f"\n{self.title}\n{'-' * len(self.title)}", file=self.out, flush=True)

    def step(self, text: str) -> None:
        """One line of narrative, stamped with the seconds since the story began."""
        print(f"{time.perf_counter() - self._t0:7.2f}s  {text}", file=self.out, flush=True)

    def fact(self, name: str, value: object) -> None:
        """A measured value (e.g. ``sold=100``) that tests may read and the summary prints."""
        self.facts[name] = value

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record an invariant; ``detail`` says what was measured (printed, not compared)."""
        self.checks[name] = bool(ok)
        mark = "ok  " if ok else "FAIL"
        print(f"         [{mark}] {name}{f'  ({detail})' if detail else ''}", file=self.out, flush=True)
        return bool(ok)

    def finish(self) -> Story:
        """Raise :class:`InvariantFailed` if any check failed; otherwise return the story for the caller."""
        failed = [n for n, ok in self.checks.items() if not ok]
        if not self.checks:
            raise InvariantFailed(f"{self.title}: the example checked no invariant")
        if failed:
            raise InvariantFailed(f"{self.title}: {', '.join(failed)}")
        return self
