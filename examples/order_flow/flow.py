"""The order service: a Kafka transaction around a saga of two local SQL transactions.

For each order it opens a Kafka transaction and sends the "order placed" event into it (invisible to
``read_committed`` readers for now), then runs the ``place_order`` saga: debit the user's balance, deduct the
goods' stock (each a :class:`~distkit.saga.SqlStep` on its service's table), and as the last step commit the
Kafka transaction. If any step fails, the saga compensates the steps that succeeded (in reverse order) and the
Kafka transaction is aborted, so downstream consumers never see the order.

A crash after Kafka's commit but before the saga log records it (the dual-write gap) is closed in recovery:
the successor's commit step, having no live transaction for the order, asks the topic itself
(:mod:`~examples.order_flow.recovery`): the event is there -> the order completes; it is not -> roll back.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distkit.errors import MessagingError
from distkit.idgen import RedisWorkerLease, Snowflake
from distkit.messaging import TransactionalProducer
from distkit.saga import RetryPolicy, Saga, SagaCoordinator, SagaStatus, SqlSagaLog, SqlStep, Step, StepContext
from examples._wiring import Wiring
from examples.order_flow.recovery import OutcomeUnknown, event_committed
from examples.order_flow.services import Ledger

# A new lease namespace (every demo run has one) waits one ttl before its first id (it may be one whose marks were
# lost). 1 s keeps the demo quick with ample renewal slack (every ttl/3); production would use ~10-30 s, once.
ID_LEASE_TTL_S = 1.0
PARTITIONS = 2

Fault = Callable[[StepContext], None]


@dataclass(frozen=True)
class Outcome:
    """What became of one order: its saga's terminal status (``COMPLETED`` = placed) and why it failed."""

    order_id: int
    status: SagaStatus
    error: str | None

    @property
    def placed(self) -> bool:
        return self.status is SagaStatus.COMPLETED


class OrderService:
    """Places orders; ``producers`` Kafka transactions can be open at once (one per transactional id, like
    one per pod): the ids are stable, so a restarted service fences and aborts what its predecessor left open.
    ``fault(ctx)`` runs at the start of every step: tests raise from it to break an order at a chosen point.
    ``ids``: a generator to share (else one is leased for this service and closed with it)."""

    def __init__(self, wiring: Wiring, users: Ledger, goods: Ledger, *, producers: int = 2,
                 fault: Fault | None = None, lease_s: float = 30.0, ids: Snowflake | None = None) -> None:
        self.broker, self.topic, self.namespace = wiring.broker, wiring.topic("orders"), wiring.namespace
        self.users, self.goods, self._fault, self._own_ids = users, goods, fault, ids is None
        self.ids = ids or Snowflake.from_lease(RedisWorkerLease(wiring.redis, namespace=wiring.namespace,
                                                                ttl_s=ID_LEASE_TTL_S, mark_ttl_s=600))
        self.log = SqlSagaLog(wiring.engine, table=wiring.table("sagas"))
        self.saga = Saga("place_order", [
            SqlStep("debit_balance", action=self._debit, compensate=self._refund),
            SqlStep("deduct_stock", action=self._deduct, compensate=self._restock),
            # the pivot (no compensation: it is the last step); a recovery that cannot read the topic retries
            Step("commit_event", action=self._commit, retry=RetryPolicy(5, backoff_s=2.0), retry_on=(OutcomeUnknown,)),
        ])
        self.coordinator = SagaCoordinator(self.log, sagas=[self.saga], lease_s=lease_s)
        self._slots: queue.Queue[str] = queue.Queue()
        for i in range(producers):
            tid = f"{wiring.namespace}.order-svc-{i}"
            self.broker.transactional_producer(tid)  # init_transactions now: fences a predecessor's leftovers
            self._slots.put(tid)
        self._open: dict[str, TransactionalProducer] = {}  # saga id -> its open Kafka transaction
        self._lock = threading.Lock()

    def place(self, user: str, sku: str, qty: int, amount: int) -> Outcome:
        order_id = self.ids.next_id()
        saga_id = f"order-{order_id}"
        payload = {"order_id": order_id, "user": user, "sku": sku, "qty": qty, "amount": amount}
        tid = self._slots.get()
        tx = self.broker.transactional_producer(tid)  # the same producer again, or a fresh one if it broke
        try:
            tx.begin()
            with self._lock:
                self._open[saga_id] = tx
            tx.send(self.topic, {"type": "order_placed", **payload}, key=str(order_id), headers={"event-id": saga_id})
            result = self.coordinator.run(self.saga, saga_id, payload)
        finally:
            with self._lock:
                left_open = self._open.pop(saga_id, None)
            if left_open is not None:  # the saga did not reach its commit step: discard the event
                self._abort(left_open, tid)
            self._slots.put(tid)
        return Outcome(order_id, result.status, result.error)

    def _abort(self, tx: TransactionalProducer, tid: str) -> None:
        try:
            tx.abort()
        except MessagingError:
            # this producer is dead and can never commit; a new instance with its id fences it, and that makes
            # the broker abort its transaction now (not after transaction.timeout.ms, holding readers back)
            self.broker.transactional_producer(tid)

    def recover(self) -> list[Outcome]:
        """Finish a dead order service's sagas (once their lease ran out): an order whose event is on the topic
        completes; one whose transaction died uncommitted (aborted when we fenced its ids) is rolled back."""
        return [Outcome(int(r.saga_id.removeprefix("order-")), r.status, r.error)
                for r in self.coordinator.resume_pending()]

    def status(self, order_id: int) -> SagaStatus | None:
        return self.coordinator.status(f"order-{order_id}")

    def close(self) -> None:
        self.coordinator.close()
        if self._own_ids:
            self.ids.close()

    # -- the saga's steps -----------------------------------------------------------------------------------
    def _step(self, ctx: StepContext) -> dict[str, Any]:
        if self._fault is not None:
            self._fault(ctx)
        return dict(ctx.payload)

    def _debit(self, ctx: StepContext) -> None:
        p = self._step(ctx)
        self.users.take(ctx.connection, p["order_id"], p["user"], p["amount"])

    def _refund(self, ctx: StepContext) -> None:
        self.users.give_back(ctx.connection, ctx.payload["order_id"], ctx.payload["user"], ctx.payload["amount"])

    def _deduct(self, ctx: StepContext) -> None:
        p = self._step(ctx)
        self.goods.take(ctx.connection, p["order_id"], p["sku"], p["qty"])

    def _restock(self, ctx: StepContext) -> None:
        self.goods.give_back(ctx.connection, ctx.payload["order_id"], ctx.payload["sku"], ctx.payload["qty"])

    def _commit(self, ctx: StepContext) -> None:
        self._step(ctx)
        with self._lock:
            tx = self._open.pop(ctx.saga_id, None)
        if tx is not None:
            tx.commit()  # if this fails, distkit aborts the transaction; the saga then compensates both steps
        elif not event_committed(self.broker, self.topic, PARTITIONS, ctx.saga_id, tids=self._slots,
                                 group=f"{self.namespace}.audit"):  # recovery (see recover): ask the topic
            raise RuntimeError(f"{ctx.saga_id}: its Kafka transaction never committed (the service died): roll back")
