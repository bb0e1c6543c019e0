"""Remote steps: commands out over a :mod:`distkit.messaging` broker, replies back, correlated by saga id,
step, kind and attempt. Replies are recorded in the saga log (duplicates ignored by its key), so whichever
coordinator drives the saga — after a crash, another one — sees them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distkit.errors import InvalidArgumentError

if TYPE_CHECKING:
    from distkit.messaging.broker import Broker
    from distkit.saga.log.base import SagaLog
    from distkit.saga.saga import RemoteStep, Saga, StepContext

log = logging.getLogger("distkit.saga")


@dataclass(frozen=True)
class Reply:
    saga_id: str
    step: str
    kind: str  # "action" | "compensate"
    attempt: int
    ok: bool
    result: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Command:
    """What a participant service receives (``parse_command(msg.value)``)."""

    saga_id: str
    step: str
    kind: str
    attempt: int
    idempotency_key: str
    payload: Mapping[str, Any]
    reply_topic: str
    action_completed: bool = True


def parse_command(value: Any) -> Command:
    """A command message's value as a :class:`Command`; a malformed one raises InvalidArgumentError."""
    try:
        return Command(
            saga_id=str(value["saga_id"]),
            step=str(value["step"]),
            kind=str(value["kind"]),
            attempt=int(value["attempt"]),
            idempotency_key=str(value["idempotency_key"]),
            payload=dict(value.get("payload") or {}),
            reply_topic=str(value["reply_topic"]),
            action_completed=bool(value.get("action_completed", True)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"not a saga command: {exc!r}") from exc


def reply_for(command: Command, *, ok: bool = True, result: Any = None, error: str | None = None) -> dict[str, Any]:
    """The reply value a participant sends to ``command.reply_topic`` (key: ``command.saga_id``)."""
    return {
        "saga_id": command.saga_id,
        "step": command.step,
        "kind": command.kind,
        "attempt": command.attempt,
        "ok": bool(ok),
        "result": result,
        "error": error,
    }


def _parse_reply(value: Any) -> Reply | None:
    try:
        return Reply(str(value["saga_id"]), str(value["step"]), str(value["kind"]), int(value["attempt"]),
                     bool(value["ok"]), value.get("result"), value.get("error"))
    except (KeyError, TypeError, ValueError):
        return None


class RemoteChannel:
    """One coordinator's command producer and reply listener (a consumer in ``group`` on every reply topic)."""

    def __init__(self, broker: Broker, saga_log: SagaLog, owner: str, group: str,
                 on_late_reply: Callable[[Reply], None]) -> None:
        self._broker = broker
        self._log = saga_log
        self._owner = owner
        self._group = group
        self._on_late = on_late_reply
        self._topics: set[str] = set()
        self._waiters: dict[tuple[str, str, str, int], threading.Event] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._producer: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def listen(self, saga: Saga) -> None:
        from distkit.saga.saga import RemoteStep

        new = {s.reply_topic for s in saga.steps if isinstance(s, RemoteStep)} - self._topics
        if not new:
            return
        with self._lock:
            self._topics |= new
            restart = self._thread is not None
        if restart:
            self._stop_listener()
        self._start_listener()

    def _start_listener(self) -> None:
        self._stop = threading.Event()
        self._ready = threading.Event()
        t = threading.Thread(target=self._consume, args=(self._stop, sorted(self._topics)),
                             name=f"distkit-saga-replies-{self._owner}", daemon=True)
        self._thread = t
        t.start()
        self._ready.wait(30)

    def _stop_listener(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None

    def _consume(self, stop: threading.Event, topics: list[str]) -> None:
        consumer = self._broker.consumer(self._group, topics)
        self._ready.set()
        try:
            while not stop.is_set():
                try:
                    batch = consumer.poll_batch(100, 0.1)
                except Exception:
                    log.exception("saga reply listener: poll failed; retrying")
                    time.sleep(0.5)
                    continue
                for msg in batch:
                    self._handle(msg.value)
                if batch:
                    consumer.commit()
        finally:
            consumer.close()

    def _handle(self, value: Any) -> None:
        reply = _parse_reply(value)
        if reply is None:
            log.warning("saga reply listener: ignoring a malformed reply %r", value)
            return
        fresh = self._log.record_reply(reply)
        key = (reply.saga_id, reply.step, reply.kind, reply.attempt)
        with self._lock:
            ev = self._waiters.get(key)
        if ev is not None:
            ev.set()
        elif fresh and reply.kind == "action" and reply.ok:
            try:
                self._on_late(reply)
            except Exception:
                log.exception("saga %s: handling a late reply failed", reply.saga_id)

    def send_command(self, step: RemoteStep, ctx: StepContext) -> None:
        kind = "compensate" if ctx.compensating else "action"
        topic = (step.compensate_topic or step.command_topic) if ctx.compensating else step.command_topic
        body = step.build_command(ctx) if (step.build_command is not None and not ctx.compensating) else ctx.payload
        value = {
            "saga_id": ctx.saga_id,
            "saga": ctx.saga,
            "step": step.name,
            "kind": kind,
            "attempt": ctx.attempt,
            "idempotency_key": ctx.idempotency_key,
            "payload": body,
            "reply_topic": step.reply_topic,
            "action_completed": ctx.action_completed,
        }
        headers = {"saga-id": ctx.saga_id, "saga-step": step.name, "saga-kind": kind,
                   "idempotency-key": ctx.idempotency_key}
        with self._send_lock:
            if self._producer is None:
                self._producer = self._broker.transactional_producer(f"distkit-saga-{self._owner}")
            with self._producer as tx:
                tx.send(topic, value, key=ctx.saga_id, headers=headers)

    def call(self, step: RemoteStep, ctx: StepContext, timeout_s: float, kind: str) -> Reply:
        """Send the command and wait for its reply (one already in the log — e.g. received while this
        coordinator was dead — is used as is). Raises the coordinator's timeout when none comes in time."""
        from distkit.saga.coordinator import _TimedOut

        key = (ctx.saga_id, step.name, kind, ctx.attempt)
        ev = threading.Event()
        with self._lock:
            self._waiters[key] = ev
        try:
            got = self._log.get_reply(*key)
            if got is not None:
                return got
            self.send_command(step, ctx)
            deadline = time.monotonic() + timeout_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _TimedOut(f"no {kind} reply from {step.name!r} within {timeout_s} s")
                ev.wait(min(left, 0.1))  # woken by our listener; the poll covers replies another one recorded
                got = self._log.get_reply(*key)
                if got is not None:
                    return got
        finally:
            with self._lock:
                self._waiters.pop(key, None)

    def close(self) -> None:
        self._stop_listener()
        with self._send_lock:
            if self._producer is not None:
                self._producer.close()
                self._producer = None
