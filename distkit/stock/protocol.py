"""What every stock strategy offers, so an order flow can switch strategy without changing code."""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

from distkit import _metrics
from distkit.errors import InvalidArgumentError

_DEDUCTIONS = _metrics.counter("distkit.stock.deductions", "1", "try_deduct() calls by strategy and outcome")
_RESTORES = _metrics.counter("distkit.stock.restores", "1", "restore() calls that gave units back")
# outcomes: deducted (now), repeat (this order already holds it), sold_out, refused (order restored before)
_ATTRS = {(s, o): {"strategy": s, "outcome": o} for s in ("redis", "token_pool", "locked_db")
          for o in ("deducted", "repeat", "sold_out", "refused")}


def count_deduction(strategy: str, outcome: str) -> None:
    """One try_deduct() answer (attributes: the strategy and the outcome, never the sku or the order)."""
    _DEDUCTIONS.add(1, _ATTRS[(strategy, outcome)])


def count_restore(strategy: str, qty: int) -> None:
    if qty > 0:
        _RESTORES.add(1, {"strategy": strategy})

_SKU = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


@runtime_checkable
class Stock(Protocol):
    """``try_deduct`` never sells below zero and is idempotent per ``order_id`` (a retried deduction for the
    same order returns ``True`` again without deducting twice); ``restore`` is its compensation, once per
    order (a deduction arriving after its order was restored is refused)."""

    def load(self, sku: str, qty: int) -> None: ...

    def try_deduct(self, sku: str, qty: int = 1, *, order_id: str) -> bool: ...

    def restore(self, sku: str, order_id: str) -> int: ...

    def available(self, sku: str) -> int: ...


def _shown(value: object) -> str:
    """A bad value as an error shows it: a 300 KB order id must not become a 300 KB message in every log line."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} chars)"


def check(sku: str, qty: int | None = None, order_id: str | None = None) -> None:
    if not isinstance(sku, str) or not _SKU.match(sku):
        raise InvalidArgumentError(f"sku must be 1-100 of [A-Za-z0-9._:-], got {_shown(sku)}")
    if qty is not None and (isinstance(qty, bool) or not isinstance(qty, int) or qty < 1 or qty > 10**9):
        raise InvalidArgumentError(f"qty must be an int from 1 to 10**9, got {qty!r}")
    if order_id is not None and (not isinstance(order_id, str) or not order_id or len(order_id) > 200
                                 or order_id.startswith("__")):
        raise InvalidArgumentError(f"order_id must be 1-200 characters not starting with '__', got {_shown(order_id)}")
