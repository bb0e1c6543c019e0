"""The poll loop each consumer group runs (Abinitio's, the UI's, the MD's): at-least-once, redelivery on failure."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from distkit.messaging import Broker, Message

log = logging.getLogger("examples.scenario_flow")


def consume(broker: Broker, group: str, topic: str, handler: Callable[[Message], Any], stop: threading.Event,
            ready: threading.Event) -> None:
    """A consumer group's poll loop: offsets are committed after the batch is handled; a handler that raises
    leaves them uncommitted, and the loop's next consumer reads those messages again (redelivery)."""
    while not stop.is_set():
        consumer = broker.consumer(group, [topic])
        try:
            while not stop.is_set():
                batch = consumer.poll_batch(50, 0.1)
                if consumer.assignment():
                    ready.set()
                for msg in batch:
                    handler(msg)
                if batch:
                    consumer.commit()
        except Exception:  # logged, then re-read from the committed offsets
            log.exception("consumer %s: handler failed; re-reading from the committed offsets", group)
            stop.wait(0.2)
        finally:
            consumer.close()
