"""The checkout endpoint of a flash sale: a QPS limit, then a bulkhead, then one stock deduction.

Every request gets exactly one answer. The limiter and the bulkhead shed load *before* it reaches the stock (a
Redis script or a database row), and ``degrade`` turns each kind of shedding into a polite "try later", so a
flood of buyers can never become an outage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distkit.errors import BulkheadFullError, LockTimeoutError
from distkit.ratelimit import qps_limit
from distkit.resilience import Bulkhead, degrade
from distkit.stock import Stock

SOLD = "sold"
SOLD_OUT = "sold out"
RATE_LIMITED = "try later: rate limited"
BUSY = "try later: busy"
ANSWERS = (SOLD, SOLD_OUT, RATE_LIMITED, BUSY)


def checkout_endpoint(stock: Stock, sku: str, limiter: Any, bulkhead: Bulkhead) -> Callable[[str], str]:
    """``buy(order_id) -> answer``: the handler a web framework would route ``POST /buy`` to.

    The order id comes from the client, so a retried or duplicated request carries the same id and the stock
    deducts it at most once (``Stock.try_deduct`` is idempotent per order)."""

    # A busy bulkhead (all slots taken longer than its wait) or a stock lock queue that is too long means
    # "come back in a moment": the buyer is told so at once instead of piling onto the database.
    @degrade(fallback=lambda order_id: BUSY, on=(BulkheadFullError, LockTimeoutError))
    @qps_limit(limiter, key=f"checkout:{sku}", fallback=lambda order_id: RATE_LIMITED)
    @bulkhead
    def buy(order_id: str) -> str:
        return SOLD if stock.try_deduct(sku, 1, order_id=order_id) else SOLD_OUT

    return buy
