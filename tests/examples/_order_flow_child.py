"""An order service process that SIGKILLs itself right after Kafka committed an order's transaction, before the
saga log records the commit step: the dual-write gap. ``python -m tests.examples._order_flow_child NAMESPACE``
(with the ``DISTKIT_*`` URLs and ``PGOPTIONS`` of the test's schema)."""

from __future__ import annotations

import os
import signal
import sys

from distkit.idgen import Snowflake
from distkit.messaging.kafka.producer import KafkaTransactionalProducer
from examples._wiring import Wiring
from examples.order_flow.app import open_shop
from examples.order_flow.flow import OrderService


def main(namespace: str) -> None:
    wiring = Wiring.from_env()
    wiring.namespace = namespace
    users, goods = open_shop(wiring)
    commit = KafkaTransactionalProducer.commit

    def commit_then_die(self: KafkaTransactionalProducer) -> None:
        commit(self)  # commit_transaction() returned: the event is visible to read_committed consumers
        if ".order-svc-" in self.transactional_id:
            os.kill(os.getpid(), signal.SIGKILL)

    KafkaTransactionalProducer.commit = commit_then_die  # type: ignore[method-assign]
    # a fixed worker id: no lease wait (this process places one order; the successor places none)
    svc = OrderService(wiring, users, goods, producers=1, lease_s=0.3, ids=Snowflake(worker_id=31, datacenter_id=3))
    svc.place("carol", "tea", 1, 1200)
    sys.exit("still alive after the commit")


if __name__ == "__main__":
    main(sys.argv[1])
