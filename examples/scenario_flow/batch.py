"""The batch system ("Abinitio"), simulated: it runs one job per saga command and, when the job finishes,
publishes the result event (for the UI and MD systems) and the saga's reply in ONE Kafka transaction, so
the coordinator never sees a success whose event is missing, nor the reverse.

A compensation command kills a job still running (a job that missed the threshold never reports);
the job's trace continues the UI request's trace, because the handler runs in the command's trace
(:func:`~distkit.tracing.traced_handler`) and the event carries it on (:func:`~distkit.tracing.inject_headers`).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import TracerProvider

from distkit.messaging import Broker, Message
from distkit.saga import Command, parse_command, reply_for
from distkit.tracing import inject_headers, traced_handler


class BatchSystem:
    """Consumes ``jobs_topic``; finished jobs go to ``results_topic``. ``published`` keeps each job's event."""

    def __init__(self, broker: Broker, results_topic: str, transactional_id: str, provider: TracerProvider) -> None:
        self.results_topic = results_topic
        self.published: dict[str, tuple[dict[str, str], Mapping[str, str | bytes]]] = {}
        self.cancelled: list[str] = []
        self._state: dict[str, str] = {}  # request id -> running | done | cancelled
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()
        self._producer = broker.transactional_producer(transactional_id)
        self._tracer = provider.get_tracer("scenario.abinitio")
        self.handle = traced_handler(span_name="abinitio.command", tracer_provider=provider)(self._handle)

    def _handle(self, msg: Message) -> None:
        cmd = parse_command(msg.value)
        rid = str(cmd.payload["request_id"])
        with self._lock:
            if cmd.kind == "action" and rid not in self._state:  # a repeated command starts nothing new
                self._state[rid] = "running"
                job = contextvars.copy_context()  # the job finishes in the command's trace
                timer = threading.Timer(float(cmd.payload["runtime_s"]), job.run, args=(self._finish, cmd, rid))
                timer.daemon = True
                self._timers[rid] = timer
                timer.start()
            elif cmd.kind == "compensate":
                if self._state.get(rid, "running") == "running":  # never started (empty compensation) or running
                    self._state[rid] = "cancelled"
                    self.cancelled.append(rid)
                    if rid in self._timers:
                        self._timers[rid].cancel()
                self._send([(cmd.reply_topic, reply_for(cmd), None)], cmd.saga_id)

    def _finish(self, cmd: Command, rid: str) -> None:
        with self._tracer.start_as_current_span("abinitio.job"), self._lock:
            if self._state.get(rid) != "running":
                return  # killed by the compensation meanwhile
            self._state[rid] = "done"
            event = {"request_id": rid, "status": "OK", "result": f"report-{rid}.csv"}
            headers = inject_headers({"event-id": f"{rid}:result"})
            self.published[rid] = (event, headers)
            self._send([(self.results_topic, event, headers), (cmd.reply_topic, reply_for(cmd, result=event), None)],
                       rid)

    def _send(self, records: list[tuple[str, Any, Mapping[str, str | bytes] | None]], key: str) -> None:
        with self._producer as tx:
            for topic, value, headers in records:
                tx.send(topic, value, key=key, headers=headers)

    def republish(self, request_id: str, times: int) -> None:
        """Send a finished job's event again, same event-id (an at-least-once producer that retried)."""
        event, headers = self.published[request_id]
        with self._lock:
            for _ in range(times):
                self._send([(self.results_topic, event, headers)], request_id)

    def close(self) -> None:
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()
        self._producer.close()

