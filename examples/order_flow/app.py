"""The demo: three orders (one placed, one refused for the balance, one for the stock) and their checks."""

from __future__ import annotations

from distkit.saga import SagaStatus
from examples._story import Story
from examples._wiring import Wiring
from examples.order_flow.downstream import OrderCounter, close_till
from examples.order_flow.flow import PARTITIONS, OrderService, Outcome
from examples.order_flow.services import InsufficientBalance, Ledger, OutOfStock

PRICES = {"tea": 1200, "cake": 1500}  # cents
BALANCES = {"alice": 5000, "bob": 500}
STOCK = {"tea": 10, "cake": 0}


def open_shop(wiring: Wiring) -> tuple[Ledger, Ledger]:
    """The user service's balances and the goods service's stock, each in a table of its own."""
    users = Ledger(wiring.engine, wiring.table("balances"), shortage=InsufficientBalance)
    goods = Ledger(wiring.engine, wiring.table("stock"), shortage=OutOfStock)
    wiring.broker.create_topic(wiring.topic("orders"), PARTITIONS)
    return users, goods


def main(wiring: Wiring | None = None) -> Story:
    own = wiring is None
    w = wiring if wiring is not None else Wiring.from_env()
    try:
        return run(w)
    finally:
        if own:
            w.close()


def run(w: Wiring) -> Story:
    story = Story("order_flow: a Kafka transaction around a saga of two local transactions")
    users, goods = open_shop(w)
    users.open_accounts(BALANCES)
    goods.open_accounts(STOCK)
    story.step(f"balances {BALANCES} (cents), stock {STOCK}, prices {PRICES}")
    counter = OrderCounter(w.broker, w.topic("orders"), group=f"{w.namespace}.shipping")
    shop = OrderService(w, users, goods)
    story.step(f"order service up: worker id {shop.ids.worker_id} leased (a new namespace waits one lease ttl)")
    try:
        orders: list[tuple[str, Outcome]] = []
        for label, user, sku, qty in [("placed", "alice", "tea", 2), ("no money", "bob", "tea", 1),
                                      ("no stock", "alice", "cake", 1)]:
            out = shop.place(user, sku, qty, PRICES[sku] * qty)
            orders.append((label, out))
            story.step(f"{user} buys {qty} {sku}: order {out.order_id} {out.status.value}"
                       + (f" ({out.error})" if out.error else ""))
        close_till(w.broker, w.topic("orders"), PARTITIONS, f"{w.namespace}.till", "demo")
        closed = counter.read_until_closed("demo", PARTITIONS)
        story.step(f"shipping read every partition up to the till marker: saw {dict(counter.seen)}")
        ok_id, poor_id, cake_id = (o.order_id for _, o in orders)
        ids = [o.order_id for _, o in orders]
        balances, stock = users.amounts(), goods.amounts()
        for name, value in [("order_ids", ids), ("balances", balances), ("stock", stock),
                            ("seen", dict(counter.seen)), ("statuses", [o.status.value for _, o in orders]),
                            ("refunds_of_failed_stock_order", users.changes(cake_id))]:
            story.fact(name, value)
        story.check("balances as expected", balances == {"alice": 5000 - 2400, "bob": 500}, str(balances))
        story.check("stock as expected", stock == {"tea": 8, "cake": 0}, str(stock))
        story.check("out-of-stock debit refunded exactly once", users.changes(cake_id) == [-1500, 1500],
                    f"journal {users.changes(cake_id)}")
        story.check("refused balance changed nothing", users.changes(poor_id) == [] and goods.changes(poor_id) == [])
        story.check("consumer saw exactly the placed order, once", closed and dict(counter.seen) == {ok_id: 1},
                    f"seen {dict(counter.seen)}")
        story.check("order ids unique and increasing", ids == sorted(set(ids)), str(ids))
        statuses = [shop.status(i) for i in ids]
        story.check("every saga terminal", statuses == [SagaStatus.COMPLETED, SagaStatus.COMPENSATED,
                                                        SagaStatus.COMPENSATED], str([s and s.value for s in statuses]))
    finally:
        shop.close()
        counter.close()
    return story.finish()
