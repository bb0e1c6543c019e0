"""examples.order_flow against real Redis, Kafka and PostgreSQL: the demo's invariants, then faults that try to
break the guarantee (an order's event is visible iff its debit and deduction stand; a failed order's effects are
compensated exactly once)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from distkit.config import Settings
from distkit.idgen import RedisWorkerLease, Snowflake
from distkit.saga import SagaStatus, StepContext
from examples._wiring import Wiring
from examples.order_flow import main
from examples.order_flow.app import open_shop
from examples.order_flow.downstream import OrderCounter, close_till
from examples.order_flow.flow import ID_LEASE_TTL_S, PARTITIONS, Fault, OrderService, Outcome
from examples.order_flow.services import Ledger

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Shop:
    wiring: Wiring
    users: Ledger
    goods: Ledger
    counter: OrderCounter

    ids: Snowflake
    rounds: int = 0

    def service(self, **kwargs: Any) -> OrderService:
        return OrderService(self.wiring, self.users, self.goods, ids=self.ids, **kwargs)

    def read_all(self, isolation_level: str = "read_committed") -> OrderCounter:
        """Commit a till marker into every partition and read up to it (with a fresh counter if asked for
        read_uncommitted): every order decided before is then counted."""
        self.rounds += 1
        token = f"round-{self.rounds}"
        close_till(self.wiring.broker, self.wiring.topic("orders"), PARTITIONS, f"{self.wiring.namespace}.till", token)
        counter = self.counter
        if isolation_level != "read_committed":
            counter = OrderCounter(self.wiring.broker, self.wiring.topic("orders"), f"{self.wiring.namespace}.dirty",
                                   isolation_level)
        assert counter.read_until_closed(token, PARTITIONS, timeout_s=30), "the till markers never arrived"
        if counter is not self.counter:
            counter.close()
        return counter


@pytest.fixture(scope="module")
def ids(settings: Settings) -> Iterator[Snowflake]:
    """One leased generator for the fault tests: a new lease namespace waits one ttl, once per module."""
    client = settings.redis()
    gen = Snowflake.from_lease(RedisWorkerLease(client, namespace=f"t-orders-{uuid.uuid4().hex[:8]}",
                                                ttl_s=ID_LEASE_TTL_S, mark_ttl_s=60))
    yield gen
    gen.close()
    client.close()


@pytest.fixture
def shop(wiring: Wiring, ids: Snowflake) -> Iterator[Shop]:
    users, goods = open_shop(wiring)
    counter = OrderCounter(wiring.broker, wiring.topic("orders"), group=f"{wiring.namespace}.shipping")
    yield Shop(wiring, users, goods, counter, ids)
    counter.close()


def test_demo_holds_its_invariants(wiring: Wiring) -> None:
    story = main(wiring)
    assert story.checks and all(story.checks.values()), story.checks
    for name in ("balances as expected", "stock as expected", "out-of-stock debit refunded exactly once",
                 "consumer saw exactly the placed order, once", "order ids unique and increasing",
                 "every saga terminal"):
        assert story.checks[name] is True
    ids = story.facts["order_ids"]
    assert isinstance(ids, list) and len(ids) == 3
    assert story.facts["seen"] == {ids[0]: 1}
    assert story.facts["balances"] == {"alice": 2600, "bob": 500}
    assert story.facts["stock"] == {"tea": 8, "cake": 0}
    assert story.facts["statuses"] == ["COMPLETED", "COMPENSATED", "COMPENSATED"]
    assert story.facts["refunds_of_failed_stock_order"] == [-1500, 1500]


def test_16_concurrent_orders_conserve_money_and_stock(shop: Shop) -> None:
    balances = {f"u{i}": b for i, b in enumerate([2000, 2000, 1000, 1000, 500, 3000, 1500, 2500])}
    shop.users.open_accounts(balances)
    shop.goods.open_accounts({"tea": 8})
    svc = shop.service(producers=4)
    outcomes: list[Outcome] = []
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def buy(user: str) -> None:
        start.wait()
        try:
            outcomes.append(svc.place(user, "tea", 1, 1000))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=buy, args=(u,)) for u in balances for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        svc.close()
    assert errors == [] and len(outcomes) == 16
    placed = [o.order_id for o in outcomes if o.placed]
    failed = [o for o in outcomes if not o.placed]
    # 11 orders are affordable but only 8 teas exist: a stock failure happens only once stock is 0, so exactly 8
    assert len(placed) == 8 and len(failed) == 8
    assert all(o.status is SagaStatus.COMPENSATED for o in failed)
    assert all(o.error and ("InsufficientBalance" in o.error or "OutOfStock" in o.error) for o in failed)
    assert len({o.order_id for o in outcomes}) == 16  # ids unique
    revenue = -sum(shop.users.changes())
    assert revenue == 8000 and sum(shop.users.amounts().values()) + revenue == sum(balances.values())
    assert min(shop.users.amounts().values()) >= 0
    assert shop.goods.amounts() == {"tea": 0} and -sum(shop.goods.changes()) == 8
    for o in outcomes:  # per order: a placed one debited and deducted once; a failed one left no net effect
        money, stock = shop.users.changes(o.order_id), shop.goods.changes(o.order_id)
        if o.placed:
            assert (money, stock) == ([-1000], [-1])
        else:
            assert stock == [] and money in ([], [-1000, 1000])
    seen = shop.read_all().seen
    assert seen == Counter(placed)  # exactly the committed orders, each once: 0 duplicates, 0 aborted ones


def _fail_at(step: str) -> Fault:
    def fault(ctx: StepContext) -> None:
        if ctx.step == step and ctx.payload["user"] == "carol":
            raise RuntimeError(f"injected failure at {step}")

    return fault


@pytest.mark.parametrize(
    ("step", "money", "stock"),
    [
        ("debit_balance", [], []),  # nothing done yet: nothing to compensate
        ("deduct_stock", [-1200, 1200], []),  # between the steps: the debit is refunded once
        ("commit_event", [-1200, 1200], [-1, 1]),  # after the Kafka send, before its commit: both undone once
    ],
)
def test_injected_failure_aborts_the_event_and_compensates_once(
    shop: Shop, step: str, money: list[int], stock: list[int]
) -> None:
    shop.users.open_accounts({"carol": 5000, "dave": 5000})
    shop.goods.open_accounts({"tea": 5})
    svc = shop.service(fault=_fail_at(step))
    try:
        bad = svc.place("carol", "tea", 1, 1200)
        good = svc.place("dave", "tea", 1, 1200)  # the next order, on the same producer, goes through
    finally:
        svc.close()
    assert bad.status is SagaStatus.COMPENSATED and f"injected failure at {step}" in (bad.error or "")
    assert good.status is SagaStatus.COMPLETED
    assert shop.users.changes(bad.order_id) == money and shop.goods.changes(bad.order_id) == stock
    assert shop.users.amounts() == {"carol": 5000, "dave": 3800} and shop.goods.amounts() == {"tea": 4}
    assert shop.read_all().seen == Counter([good.order_id])
    if step == "commit_event":  # the event had really been sent: a read_uncommitted reader sees it
        assert shop.read_all("read_uncommitted").seen == Counter([bad.order_id, good.order_id])


def test_kafka_commit_fenced_then_the_order_is_compensated(shop: Shop) -> None:
    shop.users.open_accounts({"carol": 5000})
    shop.goods.open_accounts({"tea": 5})
    broker = shop.wiring.broker
    tid = f"{shop.wiring.namespace}.order-svc-0"

    def fence(ctx: StepContext) -> None:
        if ctx.step == "commit_event" and ctx.payload["qty"] == 2:
            broker.new_transactional_producer(tid)  # type: ignore[attr-defined]  # a zombie's successor

    svc = shop.service(producers=1, fault=fence)
    try:
        bad = svc.place("carol", "tea", 2, 2400)
        good = svc.place("carol", "tea", 1, 1200)  # the service carries on with the new producer
    finally:
        svc.close()
    assert bad.status is SagaStatus.COMPENSATED and "ProducerFenced" in (bad.error or "")
    assert good.status is SagaStatus.COMPLETED
    assert shop.users.changes(bad.order_id) == [-2400, 2400] and shop.goods.changes(bad.order_id) == [-2, 2]
    assert shop.users.amounts() == {"carol": 3800} and shop.goods.amounts() == {"tea": 4}
    assert shop.read_all().seen == Counter([good.order_id])


class Crash(BaseException):
    """The order service process dying: not an ``Exception``, so the coordinator does not handle it."""


def test_service_crash_between_steps_is_rolled_back_by_its_successor(shop: Shop) -> None:
    shop.users.open_accounts({"carol": 5000})
    shop.goods.open_accounts({"tea": 5})

    def crash(ctx: StepContext) -> None:
        if ctx.step == "deduct_stock":
            raise Crash

    first = shop.service(fault=crash, lease_s=0.3)
    with pytest.raises(Crash):
        first.place("carol", "tea", 1, 1200)
    first.close()
    assert shop.users.amounts() == {"carol": 3800}  # debited; the saga is left RUNNING in the log
    successor = shop.service()
    try:
        deadline, recovered = time.monotonic() + 10, []
        while not recovered and time.monotonic() < deadline:
            recovered = successor.recover()  # empty until the dead service's lease has run out
            time.sleep(0.05)
    finally:
        successor.close()
    assert len(recovered) == 1 and recovered[0].status is SagaStatus.COMPENSATED
    order_id = recovered[0].order_id
    assert shop.users.changes(order_id) == [-1200, 1200] and shop.goods.changes(order_id) == [-1, 1]
    assert shop.users.amounts() == {"carol": 5000} and shop.goods.amounts() == {"tea": 5}
    assert shop.read_all().seen == Counter()


def test_service_killed_after_the_kafka_commit_completes_the_order_on_recovery(shop: Shop, pg_schema: str) -> None:
    """The dual-write gap: the order service is SIGKILLed right after commit_transaction() returned, before the
    saga log recorded the commit step. The successor must not refund an order whose event consumers can see."""
    shop.users.open_accounts({"carol": 5000})
    shop.goods.open_accounts({"tea": 5})
    env = {**os.environ, "PGOPTIONS": f"-csearch_path={pg_schema}", "PYTHONPATH": str(ROOT)}
    child = subprocess.run([sys.executable, "-m", "tests.examples._order_flow_child", shop.wiring.namespace],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=40)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert shop.users.amounts() == {"carol": 3800} and shop.goods.amounts() == {"tea": 4}
    visible = shop.read_all().seen
    assert len(visible) == 1 and set(visible.values()) == {1}  # the event is out; the saga log says RUNNING
    (order_id,) = visible
    successor = shop.service()  # fences the dead service's transactional ids
    try:
        assert successor.status(order_id) is SagaStatus.RUNNING
        deadline, recovered = time.monotonic() + 15, []
        while not recovered and time.monotonic() < deadline:
            recovered = successor.recover()  # empty until the dead service's lease has run out
            time.sleep(0.05)
        status = successor.status(order_id)
    finally:
        successor.close()
    assert [(o.order_id, o.status) for o in recovered] == [(order_id, SagaStatus.COMPLETED)], recovered
    assert status is SagaStatus.COMPLETED
    assert shop.users.changes(order_id) == [-1200] and shop.goods.changes(order_id) == [-1]  # no refund, no restock
    assert shop.users.amounts() == {"carol": 3800} and shop.goods.amounts() == {"tea": 4}
    assert shop.read_all().seen == Counter([order_id])  # still exactly once


@pytest.mark.parametrize(("qty", "amount"), [(-3, -1200), (1, -1200), (-1, 1200), (0, 1200), (1, 0)])
def test_an_order_for_a_negative_or_zero_quantity_changes_nothing(shop: Shop, qty: int, amount: int) -> None:
    """An order for -3 teas at -1200 was COMPLETED: it paid the buyer 1200, put 3 teas on the shelf and
    published the order. A take of a non-positive amount is a credit in disguise: refused, nothing moves."""
    shop.users.open_accounts({"carol": 5000})
    shop.goods.open_accounts({"tea": 5})
    svc = shop.service()
    try:
        bad = svc.place("carol", "tea", qty, amount)
    finally:
        svc.close()
    assert not bad.placed and "InvalidArgumentError" in (bad.error or ""), bad
    assert shop.users.amounts() == {"carol": 5000} and shop.goods.amounts() == {"tea": 5}
    assert shop.users.total() == 5000 and shop.goods.total() == 5
    assert shop.read_all().seen == Counter()
