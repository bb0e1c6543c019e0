"""The two participants the order service calls: the user service (balances) and the goods service (stock).

Both keep non-negative amounts in a table of their own plus a journal of every change, and both change them
only on the connection they are handed: the saga step's transaction, which also records the step in the saga
log (:class:`~distkit.saga.SqlStep`). Effect and record commit together, so a debit, a refund, a deduction or
a restock happens exactly once, whatever retries or crashes occur. The journal lets the tests count them.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import BigInteger, Column, Connection, Engine, Integer, MetaData, String, Table, func, select

from distkit.errors import InvalidArgumentError


class OrderRejected(Exception):
    """A business refusal (not a fault): retrying would not help, so the saga fails the step at once."""


class InsufficientBalance(OrderRejected):
    """The user's balance is below the order's amount."""


class OutOfStock(OrderRejected):
    """The product's stock is below the ordered quantity."""


class Ledger:
    """Amounts per account (a user's balance in cents, a product's stock in units) that never go negative.

    ``take`` is one conditional ``UPDATE ... WHERE amount >= :n``: the row lock makes concurrent orders on
    the same account queue up, and the condition is re-checked after the wait, so an account is never
    overdrawn. ``shortage`` is the error raised when it would be.
    """

    def __init__(self, engine: Engine, name: str, *, shortage: type[OrderRejected]) -> None:
        self.engine = engine
        self.shortage = shortage
        meta = MetaData()
        self.accounts = Table(
            name, meta, Column("account", String(64), primary_key=True), Column("amount", BigInteger, nullable=False)
        )
        self.journal = Table(
            f"{name}_journal",
            meta,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("order_id", BigInteger, nullable=False, index=True),
            Column("account", String(64), nullable=False),
            Column("delta", BigInteger, nullable=False),
        )
        meta.create_all(engine)

    def open_accounts(self, amounts: Mapping[str, int]) -> None:
        """Create the accounts with their starting amounts (the demo's and tests' setup)."""
        with self.engine.begin() as conn:
            conn.execute(self.accounts.insert(), [{"account": a, "amount": n} for a, n in amounts.items()])

    def take(self, conn: Connection, order_id: int, account: str, n: int) -> None:
        """Remove ``n`` from ``account`` in the caller's transaction; raise ``shortage`` if it has less."""
        if n <= 0:  # taking -3 would be a credit: an order for -3 teas must not pay the buyer
            raise InvalidArgumentError(f"order {order_id}: cannot take {n} from {account}, only a positive amount")
        t = self.accounts
        done = conn.execute(t.update().where(t.c.account == account, t.c.amount >= n).values(amount=t.c.amount - n))
        if done.rowcount != 1:
            raise self.shortage(f"{account} has less than {n} for order {order_id}")
        conn.execute(self.journal.insert().values(order_id=order_id, account=account, delta=-n))

    def give_back(self, conn: Connection, order_id: int, account: str, n: int) -> None:
        """Undo a ``take`` (the saga's compensation), in the caller's transaction."""
        t = self.accounts
        conn.execute(t.update().where(t.c.account == account).values(amount=t.c.amount + n))
        conn.execute(self.journal.insert().values(order_id=order_id, account=account, delta=n))

    def amounts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {a: int(n) for a, n in conn.execute(select(self.accounts.c.account, self.accounts.c.amount))}

    def total(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.sum(self.accounts.c.amount), 0))).scalar_one())

    def changes(self, order_id: int | None = None) -> list[int]:
        """The journal's deltas (of one order, or all), oldest first: ``[-2400]``, ``[-1500, 1500]`` ..."""
        q = select(self.journal.c.delta).order_by(self.journal.c.id)
        if order_id is not None:
            q = q.where(self.journal.c.order_id == order_id)
        with self.engine.connect() as conn:
            return [int(d) for (d,) in conn.execute(q)]
