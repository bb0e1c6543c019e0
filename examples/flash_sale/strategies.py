"""The three oversell-proof strategies of :mod:`distkit.stock`, and each one's own record of what it sold.

The buyers' answers are one side of the story; the store's ledger is the other. For the Redis strategies the
ledger is the deduction event stream (written in the same Lua step as the deduction, read back through
``relay_events`` as a real relay would); for the database strategy it is the orders table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from distkit.locks import Locks
from distkit.stock import LockedDbStock, RedisStock, Stock, TokenPoolStock
from examples._wiring import Wiring


@dataclass
class Strategy:
    name: str
    stock: Stock
    sku: str
    ledger: Callable[[], list[str]]  # order ids the store deducted, one entry per deduction
    close: Callable[[], None]


class _Collector:
    """Stands in for a broker producer: keeps what ``relay_events`` sends (a real relay sends it to Kafka)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send(self, topic: str, value: dict[str, Any], **_: Any) -> None:
        self.events.append(value)

    def flush(self, timeout: float) -> int:
        return 0


def _event_ledger(stock: RedisStock | TokenPoolStock, sku: str) -> Callable[[], list[str]]:
    collector = _Collector()

    def ledger() -> list[str]:
        while stock.relay_events(sku, collector, "stock.deductions"):
            pass
        return [e["order_id"] for e in collector.events if e["kind"] == "deduct"]

    return ledger


def build(wiring: Wiring, name: str) -> Strategy:
    """``name`` is ``redis`` (Lua check-and-decrement), ``tokens`` (a token per unit) or ``locked-db``."""
    sku = f"phone-{name}"
    if name == "redis":
        lua = RedisStock(wiring.redis, namespace=wiring.namespace)
        return Strategy(name, lua, sku, _event_ledger(lua, sku), lua.close)
    if name == "tokens":
        pool = TokenPoolStock(wiring.redis, namespace=wiring.namespace)
        return Strategy(name, pool, sku, _event_ledger(pool, sku), pool.close)
    locks = Locks(wiring.redis, namespace=wiring.namespace)
    db = LockedDbStock(wiring.engine, locks, table=wiring.table("stock"))
    orders = db.table.orders.c

    def ledger() -> list[str]:
        with wiring.engine.connect() as c:
            rows = c.execute(select(orders.order_id).where(orders.sku == sku, orders.qty > 0)).scalars()
            return [str(r) for r in rows]

    return Strategy(name, db, sku, ledger, locks.close)
