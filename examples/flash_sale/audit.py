"""Does the store add up? What it says is left must equal the units loaded minus what its own ledger says it sold.

"Stock never negative" proves little: a Lua check-and-decrement cannot go below zero by construction, and the
classic oversell (a read-then-write deduction: two buyers read 7 and both write 6) keeps the counter >= 0 while
it sells one unit twice. Comparing the counter with the ledger catches that, at the end and mid-sale: with the
ledger (which only grows) read just before and just after the counter, a store that deducts and records in one
step always satisfies ``units - sold_after <= left <= units - sold_before``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from distkit.stock import Stock


@dataclass
class StockAudit:
    """Samples one sku of one store: ``sample()`` while the sale runs (from one thread) and once after it."""

    stock: Stock
    sku: str
    ledger: Callable[[], list[str]]  # order ids the store deducted, one entry per deduction
    units: int
    samples: int = 0
    lowest: int | None = None
    mismatches: list[str] = field(default_factory=list)

    def sample(self) -> None:
        before = len(self.ledger())
        left = self.stock.available(self.sku)
        after = len(self.ledger())
        self.samples += 1
        self.lowest = left if self.lowest is None else min(self.lowest, left)
        if not 0 <= self.units - after <= left <= self.units - before:
            self.mismatches.append(f"{left} left while its ledger had {before}..{after} of {self.units} units sold")

    @property
    def adds_up(self) -> bool:
        return self.samples > 0 and not self.mismatches

    def summary(self) -> str:
        if self.mismatches:
            return f"{len(self.mismatches)} of {self.samples} samples did not, e.g. {self.mismatches[0]}"
        return f"left = {self.units} - sold in {self.samples} samples, the last after the sale; lowest {self.lowest}"
