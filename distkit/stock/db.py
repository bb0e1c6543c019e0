"""Stock in SQL: strategy (a) — a distributed lock around a conditional ``UPDATE`` (:class:`LockedDbStock`) — and
the database side of the Redis strategies (:class:`SqlStockTable.apply_event`, for the consumer that applies
their deduction events asynchronously). Both use the same two tables, so the database is one source of truth."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Column, Engine, MetaData, String, Table, and_, select
from sqlalchemy.exc import IntegrityError

from distkit._sql import create_table
from distkit.errors import InvalidArgumentError, StockNotLoadedError
from distkit.stock.protocol import check, count_deduction, count_restore

if TYPE_CHECKING:
    from distkit.locks import Locks


class SqlStockTable:
    """``<table>`` (sku, qty) and ``<table>_orders`` (order_id, sku, qty: negative once restored)."""

    def __init__(self, engine: Engine, table: str = "distkit_stock") -> None:
        self.engine = engine
        meta = MetaData()
        self.stock = Table(table, meta, Column("sku", String(100), primary_key=True),
                           Column("qty", BigInteger, nullable=False))
        self.orders = Table(f"{table}_orders", meta, Column("order_id", String(200), primary_key=True),
                            Column("sku", String(100), primary_key=True), Column("qty", BigInteger, nullable=False))
        create_table(engine, self.stock)
        create_table(engine, self.orders)

    def load(self, sku: str, qty: int, conn: Any = None) -> None:
        check(sku)
        if isinstance(qty, bool) or not isinstance(qty, int) or qty < 0:
            raise InvalidArgumentError(f"qty must be an int >= 0, got {qty!r}")
        with self.engine.begin() as c:
            c.execute(self.orders.delete().where(self.orders.c.sku == sku))
            c.execute(self.stock.delete().where(self.stock.c.sku == sku))
            c.execute(self.stock.insert().values(sku=sku, qty=qty))

    def available(self, sku: str) -> int:
        with self.engine.connect() as c:
            qty = c.execute(select(self.stock.c.qty).where(self.stock.c.sku == sku)).scalar_one_or_none()
        if qty is None:
            raise StockNotLoadedError(f"no stock row for {sku!r}")
        return int(qty)

    def _order(self, c: Any, sku: str, order_id: str) -> int | None:
        o = self.orders.c
        v = c.execute(select(o.qty).where(and_(o.order_id == order_id, o.sku == sku))).scalar_one_or_none()
        return None if v is None else int(v)

    def _insert_order(self, c: Any, sku: str, order_id: str, qty: int) -> bool:
        try:
            with c.begin_nested():
                c.execute(self.orders.insert().values(order_id=order_id, sku=sku, qty=qty))
        except IntegrityError:
            return False
        return True

    def deduct_in(self, c: Any, sku: str, qty: int, order_id: str, *, checked: bool = True) -> bool:
        """Inside transaction ``c``: deduct for ``order_id`` once. ``checked``: only if enough stock is left."""
        held = self._order(c, sku, order_id)
        if held is not None:
            return held > 0
        s = self.stock.c
        cond = and_(s.sku == sku, s.qty >= qty) if checked else s.sku == sku
        if c.execute(self.stock.update().where(cond).values(qty=s.qty - qty)).rowcount != 1:
            return False
        if not self._insert_order(c, sku, order_id, qty):  # a concurrent deduction of the same order won
            raise _Retry
        return True

    def restore_in(self, c: Any, sku: str, order_id: str) -> int:
        held = self._order(c, sku, order_id)
        if held is None:
            self._insert_order(c, sku, order_id, 0)  # a later deduction for the cancelled order is refused
            return 0
        if held <= 0:
            return 0
        o, s = self.orders.c, self.stock.c
        c.execute(self.orders.update().where(and_(o.order_id == order_id, o.sku == sku)).values(qty=-held))
        c.execute(self.stock.update().where(s.sku == sku).values(qty=s.qty + held))
        return held

    def apply_event(self, conn: Any, event: dict[str, Any]) -> bool:
        """Apply one event of :meth:`RedisStock.relay_events` inside ``conn``'s transaction, exactly once per
        (order, kind): Redis already decided, so a deduction is applied without the stock check."""
        if event["kind"] == "deduct":
            if self._order(conn, event["sku"], event["order_id"]) is not None:
                return False
            return self.deduct_in(conn, event["sku"], int(event["qty"]), event["order_id"], checked=False)
        return self.restore_in(conn, event["sku"], event["order_id"]) > 0


class _Retry(Exception):
    pass


class LockedDbStock:
    """Strategy (a): a :mod:`distkit.locks` fair (FIFO) lock per SKU around a conditional
    ``UPDATE ... WHERE qty >= :qty``. Every buyer of one SKU queues on one lock, so pair it with a QPS limit; a
    repeat of an order, or a SKU already sold out, is answered from the database without queueing."""

    def __init__(self, engine: Engine, locks: Locks, *, table: str = "distkit_stock", lock_timeout_s: float = 10.0
                 ) -> None:
        self.table = SqlStockTable(engine, table)
        self.locks = locks
        self.lock_timeout_s = lock_timeout_s

    def load(self, sku: str, qty: int) -> None:
        self.table.load(sku, qty)

    def available(self, sku: str) -> int:
        return self.table.available(sku)

    def try_deduct(self, sku: str, qty: int = 1, *, order_id: str) -> bool:
        check(sku, qty, order_id)
        with self.table.engine.connect() as c:  # answered without the lock: a repeat, or clearly sold out
            held = self.table._order(c, sku, order_id)
            left = c.execute(select(self.table.stock.c.qty).where(self.table.stock.c.sku == sku)).scalar_one_or_none()
        if held is not None:
            count_deduction("locked_db", "repeat" if held > 0 else "refused")
            return held > 0
        if left is None:
            raise StockNotLoadedError(f"no stock row for {sku!r}")
        if left < qty:
            count_deduction("locked_db", "sold_out")
            return False  # a concurrent restore may add units back; the next buyer sees them
        with self.locks.fair_lock(f"stock:{sku}")(timeout=self.lock_timeout_s):  # FIFO: first come, first served
            for _ in range(3):
                try:
                    with self.table.engine.begin() as c:
                        if self.table._order(c, sku, order_id) is None and c.execute(
                            select(self.table.stock.c.qty).where(self.table.stock.c.sku == sku)
                        ).scalar_one_or_none() is None:
                            raise StockNotLoadedError(f"no stock row for {sku!r}")
                        done = self.table.deduct_in(c, sku, qty, order_id)
                    count_deduction("locked_db", "deducted" if done else "sold_out")
                    return done
                except _Retry:
                    continue
            with self.table.engine.connect() as c:  # lost the race to insert this order three times: it is held
                held = self.table._order(c, sku, order_id)
        return held is not None and held > 0

    def restore(self, sku: str, order_id: str) -> int:
        check(sku, None, order_id)
        with self.locks.fair_lock(f"stock:{sku}")(timeout=self.lock_timeout_s), self.table.engine.begin() as c:
            qty = self.table.restore_in(c, sku, order_id)
        count_restore("locked_db", qty)
        return qty
