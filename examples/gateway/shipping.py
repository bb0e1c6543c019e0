"""The shipping service: consumes the order service's ``order-created`` events from Kafka (``wiring.broker``).

Its handler runs under ``traced_handler``, so its span continues the trace the event carries; it notes the
trace id it sees, which is how the app shows one trace from the client's request to this consumer.
"""

from __future__ import annotations

import threading
import time

from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from distkit.messaging import Broker, Message
from distkit.tracing import traced_handler


class Shipping:
    """Consumes ``order-created`` in its own thread and notes the trace id each event arrived in."""

    def __init__(self, broker: Broker, topic: str, group: str, tracing: TracerProvider) -> None:
        self.trace_ids: dict[str, str] = {}  # order id -> trace id seen by the consumer
        self._consumer = broker.consumer(group, [topic])
        self._stop = threading.Event()
        self._handle = traced_handler("shipping order-created", tracer_provider=tracing)(self._on_order)
        self._thread = threading.Thread(target=self._run, name="shipping-consumer", daemon=True)
        self._thread.start()

    def _on_order(self, msg: Message) -> None:
        order_id = msg.value.get("order_id") if isinstance(msg.value, dict) else None
        if isinstance(order_id, str):  # anything else is not an order event: skipped, never a dead consumer
            self.trace_ids[order_id] = format(trace.get_current_span().get_span_context().trace_id, "032x")

    def _run(self) -> None:
        try:
            for msg in self._consumer.poll_iter(timeout_s=0.2, stop_event=self._stop):
                self._handle(msg)
                self._consumer.commit(msg)
        finally:
            self._consumer.close()

    def trace_id_of(self, order_id: str, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        while order_id not in self.trace_ids and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.trace_ids.get(order_id)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
