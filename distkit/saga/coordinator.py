"""The saga coordinator: drives sagas through the log, recovers the ones a dead coordinator left behind.

Rules (docs/saga.md): every state change is written to the log *before* the side effect it announces; every
write is a compare-and-set on the record's version and owner, so two coordinators never drive one saga; a
coordinator renews the leases of the sagas it drives from one heartbeat thread, and a saga whose lease ran
out is taken over by :meth:`SagaCoordinator.resume_pending`. Decisions come from :mod:`distkit.saga.flows`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from distkit import _metrics
from distkit.clock import Clock
from distkit.errors import (
    InvalidArgumentError,
    SagaBusyError,
    SagaDefinitionError,
    SagaOwnershipLostError,
)
from distkit.saga.flows import (
    Compensate,
    Finish,
    RunAction,
    SagaStatus,
    StepState,
    after_action_failed,
    new_steps,
    next_move,
)
from distkit.saga.log.base import SagaLog, SagaRecord, dumps
from distkit.saga.remote import RemoteChannel, Reply
from distkit.saga.saga import AnyStep, RemoteStep, Saga, SqlStep, StepContext
from distkit.tracing.spans import tracer_for

if TYPE_CHECKING:
    from distkit.messaging.broker import Broker

log = logging.getLogger("distkit.saga")

_TRANSITIONS = _metrics.counter("distkit.saga.transitions", "1", "sagas entering a status (running, compensating, ...)")
_COMPENSATIONS = _metrics.counter("distkit.saga.compensations", "1", "steps compensated, or given up on")
_RETRIES = _metrics.counter("distkit.saga.step.retries", "1", "step attempts that failed and will be retried")


@dataclass(frozen=True)
class SagaResult:
    saga_id: str
    status: SagaStatus
    step_results: dict[str, Any]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is SagaStatus.COMPLETED


@dataclass(frozen=True)
class SagaEvent:
    """One transition, for hooks (mail the user, metrics). ``kind``: ``started``, ``step_started``,
    ``step_done``, ``step_failed``, ``step_compensated``, ``completed``, ``compensated``, ``failed``,
    ``late_reply``."""

    kind: str
    saga_id: str
    saga: str
    status: SagaStatus
    step: str | None = None
    error: str | None = None


class _TimedOut(Exception):
    pass


def _result_of(rec: SagaRecord) -> SagaResult:
    results = {s["name"]: s.get("result") for s in rec.steps if s["state"] == StepState.DONE.value}
    return SagaResult(rec.saga_id, rec.status, results, rec.error)


def _call_with_timeout(fn: Callable[[StepContext], Any], ctx: StepContext, timeout_s: float | None, what: str) -> Any:
    """Run ``fn``; with a timeout it runs in a daemon thread and we stop waiting at the deadline (Python can't
    stop a thread: the late call's outcome is ignored, which is why a timed-out step is compensated)."""
    if timeout_s is None:
        return fn(ctx)
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn(ctx)
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=f"distkit-saga-{what}", daemon=True).start()
    if not done.wait(timeout_s):
        raise _TimedOut(f"{what} did not finish within {timeout_s} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class SagaCoordinator:
    """Runs sagas and recovers them.

    ``log``: a :class:`~distkit.saga.SqlSagaLog` (or ``MemorySagaLog`` for tests/demo). ``broker``: a
    :mod:`distkit.messaging` broker, needed only for :class:`~distkit.saga.RemoteStep`. ``lease_s``: how long a
    saga stays this coordinator's after its last heartbeat (a dead coordinator's sagas are resumable after it).
    ``on_event``: called with every :class:`SagaEvent` (keep it short; errors are logged, never raised)."""

    def __init__(
        self,
        log: SagaLog,
        broker: Broker | None = None,
        *,
        sagas: Sequence[Saga] = (),
        owner: str | None = None,
        lease_s: float = 30.0,
        max_workers: int = 8,
        on_event: Callable[[SagaEvent], Any] | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        reply_group: str = "distkit-saga-replies",
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(lease_s, bool) or not isinstance(lease_s, int | float) or not lease_s > 0:
            raise InvalidArgumentError(f"lease_s must be > 0, got {lease_s!r}")
        self.log = log
        self.broker = broker
        self.owner = owner or f"coord-{uuid.uuid4().hex[:12]}"
        self.lease_ms = int(lease_s * 1000)
        self._defs: dict[str, Saga] = {}
        self._on_event = on_event
        self._provider = tracer_provider
        self._clock = clock
        self._sleep = sleep
        self._driving: set[str] = set()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix=f"distkit-saga-{self.owner}")
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._remote: RemoteChannel | None = None
        self._reply_group = reply_group
        for s in sagas:
            self.register(s)

    def __repr__(self) -> str:
        return f"SagaCoordinator(owner={self.owner!r}, sagas={sorted(self._defs)})"

    # ------------------------------------------------------------------------------------------ public API
    def register(self, saga: Saga) -> None:
        """Make ``saga`` known (``run`` does it too); :meth:`resume_pending` needs every saga it may meet."""
        known = self._defs.get(saga.name)
        if known is not None and known is not saga and [s.name for s in known.steps] != [s.name for s in saga.steps]:
            raise SagaDefinitionError(f"a different saga named {saga.name!r} is already registered")
        for step in saga.steps:
            if isinstance(step, SqlStep) and step.timeout_s is not None:
                raise InvalidArgumentError(
                    f"SqlStep {step.name!r}: timeout_s is not supported (the effect commits with the log record); "
                    "use the database's statement_timeout"
                )
            if isinstance(step, RemoteStep) and self.broker is None:
                raise InvalidArgumentError(f"remote step {step.name!r} needs SagaCoordinator(broker=...)")
        self._defs[saga.name] = saga
        if any(isinstance(s, RemoteStep) for s in saga.steps):
            self._remote_channel().listen(saga)

    def run(self, saga: Saga, saga_id: str, payload: Mapping[str, Any] | None = None) -> SagaResult:
        """Run ``saga`` to a terminal state and return its result. Running the same ``saga_id`` again returns the
        stored result (or continues it, if its coordinator died); a live other coordinator → SagaBusyError."""
        self.register(saga)
        if not isinstance(saga_id, str) or not saga_id or len(saga_id) > 200:
            raise InvalidArgumentError(f"saga_id must be a string of 1-200 characters, got {saga_id!r}")
        data = _check_payload(payload)
        now = self._now_ms()
        rec = SagaRecord(
            saga_id=saga_id,
            name=saga.name,
            status=SagaStatus.RUNNING,
            payload=data,
            steps=new_steps([s.name for s in saga.steps]),
            owner=self.owner,
            lease_until_ms=now + self.lease_ms,
            version=1,
            created_ms=now,
            updated_ms=now,
        )
        if self.log.create(rec):
            self._emit("started", rec)
            return self._drive(saga, rec)
        existing = self.log.get(saga_id)
        if existing is None:  # pragma: no cover - deleted between create and get
            raise SagaBusyError(f"saga {saga_id!r} vanished while starting; retry")
        if existing.name != saga.name:
            raise InvalidArgumentError(f"saga id {saga_id!r} belongs to saga {existing.name!r}, not {saga.name!r}")
        if existing.status.terminal:
            return _result_of(existing)
        with self._lock:  # the log's claim accepts its own owner: only this reservation stops a second driver here
            if saga_id in self._driving:
                raise SagaBusyError(f"saga {saga_id!r} is being driven by this coordinator already; wait for it")
            self._driving.add(saga_id)
        try:
            claimed = self.log.claim(saga_id, self.owner, now, self.lease_ms)
            if claimed is None:
                raise SagaBusyError(
                    f"saga {saga_id!r} is being driven by {existing.owner}; try status() or resume later"
                )
            return self._drive(saga, claimed)
        finally:
            with self._lock:
                self._driving.discard(saga_id)

    def start(self, saga: Saga, saga_id: str, payload: Mapping[str, Any] | None = None) -> Future[SagaResult]:
        """Run in the background; the future gives the :class:`SagaResult`."""
        self.register(saga)
        context = contextvars.copy_context()  # the caller's trace and request context go with the saga
        return self._executor.submit(context.run, self.run, saga, saga_id, payload)

    def status(self, saga_id: str) -> SagaStatus | None:
        rec = self.log.get(saga_id)
        return rec.status if rec is not None else None

    def result(self, saga_id: str) -> SagaResult | None:
        rec = self.log.get(saga_id)
        return _result_of(rec) if rec is not None else None

    def stuck(self, limit: int = 100) -> list[SagaRecord]:
        """Sagas whose compensation gave up (status FAILED): an operator must finish them."""
        return self.log.find(SagaStatus.FAILED, limit)

    def resume_pending(self, *, wait: bool = True, limit: int = 1000) -> list[SagaResult]:
        """Take over every saga whose coordinator died (its lease ran out) and drive it to a terminal state.
        Returns their results (``wait=False``: starts them in the background and returns ``[]``)."""
        futures = [self._executor.submit(self._take_over, sid) for sid in self.log.expired(self._now_ms(), limit)]
        if not wait:
            return []
        out = []
        for f in futures:
            with contextlib.suppress(SagaOwnershipLostError):
                got = f.result()
                if got is not None:
                    out.append(got)
        return out

    def _take_over(self, saga_id: str) -> SagaResult | None:
        with self._lock:  # the log's claim accepts its own owner, so only this reservation stops a second driver
            if saga_id in self._driving:
                return None  # ours already: a late heartbeat let its lease lapse, or another resume took it
            self._driving.add(saga_id)
        try:
            rec = self.log.claim(saga_id, self.owner, self._now_ms(), self.lease_ms)
            if rec is None:
                return None  # another coordinator got it first
            saga = self._defs.get(rec.name)
            if saga is None or [s["name"] for s in rec.steps] != [s.name for s in saga.steps]:
                log.error("saga %s: no matching definition of %r registered; left for another coordinator", saga_id,
                          rec.name)
                self.log.renew(self.owner, [saga_id], 0)  # give it back at once
                return None
            return self._drive(saga, rec)
        finally:
            with self._lock:
                self._driving.discard(saga_id)

    def close(self, *, wait: bool = True) -> None:
        """Stop the heartbeat, the reply listener and the workers (``wait``: let running sagas finish first)."""
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(5)
        if self._remote is not None:
            self._remote.close()

    def __enter__(self) -> SagaCoordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ internals
    def _now_ms(self) -> int:
        return self._clock() if self._clock is not None else time.time_ns() // 1_000_000

    def _emit(self, kind: str, rec: SagaRecord, step: str | None = None, error: str | None = None) -> None:
        if kind == "started":
            _TRANSITIONS.add(1, {"saga": rec.name, "status": rec.status.value.lower()})
        elif kind == "step_compensated":
            _COMPENSATIONS.add(1, {"saga": rec.name, "outcome": "compensated"})
        if self._on_event is None:
            return
        try:
            self._on_event(SagaEvent(kind, rec.saga_id, rec.name, rec.status, step, error))
        except Exception:
            log.exception("saga %s: on_event hook failed for %s", rec.saga_id, kind)

    def _remote_channel(self) -> RemoteChannel:
        if self._remote is None:
            assert self.broker is not None  # checked when a saga with a RemoteStep is registered or run
            self._remote = RemoteChannel(self.broker, self.log, self.owner, self._reply_group, self._late_reply)
        return self._remote

    def _late_reply(self, reply: Reply) -> None:
        """A success arriving after its step timed out: the action did happen, so (re)send its compensation."""
        rec = self.log.get(reply.saga_id)
        if rec is None or reply.kind != "action" or not reply.ok:
            return
        saga = self._defs.get(rec.name)
        if saga is None:
            return
        try:
            step = saga.step(reply.step)
            s = rec.step(reply.step)
        except KeyError:
            return
        if s["state"] in (StepState.TIMED_OUT.value, StepState.COMPENSATING.value, StepState.COMPENSATED.value) and (
            isinstance(step, RemoteStep)
        ):
            self._emit("late_reply", rec, reply.step)
            self._remote_channel().send_command(step, self._context(rec, step, 1, compensating=True))

    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is not None:
            return
        with self._lock:
            if self._heartbeat is None:
                t = threading.Thread(target=self._beat, name=f"distkit-saga-heartbeat-{self.owner}", daemon=True)
                t.start()
                self._heartbeat = t

    def _beat(self) -> None:
        interval = self.lease_ms / 3000
        while not self._stop.wait(interval):
            with self._lock:
                ids = list(self._driving)
            try:
                self.log.renew(self.owner, ids, self._now_ms() + self.lease_ms)
            except Exception:
                log.exception("saga heartbeat of %s failed; leases run out in %d ms", self.owner, self.lease_ms)

    def _write(self, rec: SagaRecord, *, connection: Any = None, **changes: Any) -> SagaRecord:
        now = self._now_ms()
        new = rec.evolve(version=rec.version + 1, updated_ms=now, lease_until_ms=now + self.lease_ms, **changes)
        written = self.log.write(new, connection=connection)
        if written.status is not rec.status:
            _TRANSITIONS.add(1, {"saga": rec.name, "status": written.status.value.lower()})
        return written

    def _context(self, rec: SagaRecord, step: AnyStep, attempt: int, *, compensating: bool = False,
                 action_completed: bool = True, connection: Any = None) -> StepContext:
        results = {s["name"]: s.get("result") for s in rec.steps if "result" in s}
        key = f"{rec.saga_id}:{step.name}" + (":compensate" if compensating else "")
        return StepContext(rec.saga_id, rec.name, step.name, attempt, key, rec.payload, results, compensating,
                           action_completed, connection)

    @contextlib.contextmanager
    def _span(self, rec: SagaRecord, step: AnyStep, what: str, attempt: int) -> Iterator[None]:
        tracer = tracer_for(self._provider)
        if tracer is None:
            yield
            return
        attrs: dict[str, Any] = {"saga.id": rec.saga_id, "saga.name": rec.name, "saga.step": step.name}
        attrs["saga.attempt"] = attempt
        with tracer.start_as_current_span(f"saga {rec.name}.{step.name} {what}", attributes=attrs):
            yield

    def _drive(self, saga: Saga, rec: SagaRecord) -> SagaResult:
        with self._lock:
            self._driving.add(rec.saga_id)
        self._ensure_heartbeat()
        try:
            while True:
                move = next_move(rec.status, rec.steps)
                if isinstance(move, Finish):
                    if rec.status is not move.status:
                        rec = self._write(rec, status=move.status)
                    self._emit(move.status.value.lower(), rec, error=rec.error)
                    return _result_of(rec)
                if isinstance(move, RunAction):
                    rec = self._run_action(saga, rec, move)
                elif isinstance(move, Compensate):
                    rec = self._compensate(saga, rec, move)
        finally:
            with self._lock:
                self._driving.discard(rec.saga_id)

    def _with_step(self, rec: SagaRecord, index: int, **fields: Any) -> list[dict[str, Any]]:
        steps = [dict(s) for s in rec.steps]
        steps[index].update(fields)
        return steps

    def _run_action(self, saga: Saga, rec: SagaRecord, move: RunAction) -> SagaRecord:
        step = saga.steps[move.index]
        last = max(move.attempt, step.retry.max_attempts)
        for attempt in range(move.attempt, last + 1):
            rec = self._write(rec, steps=self._with_step(rec, move.index, state=StepState.RUNNING.value,
                                                          attempts=attempt))
            self._emit("step_started", rec, step.name)
            timed_out = False
            try:
                with self._span(rec, step, "action", attempt):
                    if isinstance(step, RemoteStep):
                        reply = self._remote_channel().call(step, self._context(rec, step, attempt), step.timeout_s,
                                                            "action")
                        if not reply.ok:
                            raise RuntimeError(reply.error or "remote step answered failure")
                        result: Any = reply.result
                    elif isinstance(step, SqlStep):
                        return self._sql_action(step, rec, move.index, attempt)
                    else:
                        ctx = self._context(rec, step, attempt)
                        result = _call_with_timeout(step.action, ctx, step.timeout_s, step.name)
            except _TimedOut as exc:
                timed_out, error = True, str(exc)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                retryable = isinstance(step, RemoteStep) or isinstance(exc, step.retry_on)
                if not retryable:
                    return self._fail_step(rec, move.index, error, timed_out=False)
            else:
                rec = self._write(rec, steps=self._with_step(rec, move.index, state=StepState.DONE.value,
                                                              result=_jsonable(result)))
                self._emit("step_done", rec, step.name)
                return rec
            if attempt >= last:
                return self._fail_step(rec, move.index, error, timed_out=timed_out)
            _RETRIES.add(1, {"saga": rec.name, "step": step.name, "phase": "action"})
            self._sleep(step.retry.delay_s(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _sql_action(self, step: SqlStep, rec: SagaRecord, index: int, attempt: int) -> SagaRecord:
        with self.log.transaction() as conn:
            ctx = self._context(rec, step, attempt, connection=conn)
            result = step.action(ctx)
            rec = self._write(rec, connection=conn, steps=self._with_step(rec, index, state=StepState.DONE.value,
                                                                          result=_jsonable(result)))
        self._emit("step_done", rec, step.name)
        return rec

    def _fail_step(self, rec: SagaRecord, index: int, error: str, *, timed_out: bool) -> SagaRecord:
        steps = after_action_failed(rec.steps, index, timed_out=timed_out)
        steps[index]["error"] = error
        name = rec.steps[index]["name"]
        rec = self._write(rec, steps=steps, status=SagaStatus.COMPENSATING, error=f"step {name!r} failed: {error}")
        self._emit("step_failed", rec, name, error)
        return rec

    def _compensate(self, saga: Saga, rec: SagaRecord, move: Compensate) -> SagaRecord:
        step = saga.steps[move.index]
        cur = rec.steps[move.index]
        before = cur.get("before", cur["state"]) if cur["state"] == StepState.COMPENSATING.value else cur["state"]
        if not step.compensate:
            return self._write(rec, steps=self._with_step(rec, move.index, state=StepState.SKIPPED.value))
        policy = step.compensate_retry
        last = max(move.attempt, policy.max_attempts)
        for attempt in range(move.attempt, last + 1):
            rec = self._write(rec, steps=self._with_step(rec, move.index, state=StepState.COMPENSATING.value,
                                                          comp_attempts=attempt, before=before))
            ctx_args = {"compensating": True, "action_completed": before == StepState.DONE.value}
            try:
                with self._span(rec, step, "compensate", attempt):
                    if isinstance(step, RemoteStep):
                        reply = self._remote_channel().call(step, self._context(rec, step, attempt, **ctx_args),
                                                            step.timeout_s, "compensate")
                        if not reply.ok:
                            raise RuntimeError(reply.error or "remote compensation answered failure")
                    elif isinstance(step, SqlStep):
                        with self.log.transaction() as conn:
                            assert step.compensate is not None
                            step.compensate(self._context(rec, step, attempt, connection=conn, **ctx_args))
                            rec = self._write(rec, connection=conn, steps=self._with_step(
                                rec, move.index, state=StepState.COMPENSATED.value))
                        self._emit("step_compensated", rec, step.name)
                        return rec
                    else:
                        comp = step.compensate
                        assert callable(comp)
                        ctx = self._context(rec, step, attempt, **ctx_args)
                        _call_with_timeout(comp, ctx, step.timeout_s, f"{step.name}-compensate")
            except (_TimedOut, Exception) as exc:
                error = f"compensation of {step.name!r} failed: {type(exc).__name__}: {exc}"
                if attempt >= last:
                    _COMPENSATIONS.add(1, {"saga": rec.name, "outcome": "gave_up"})
                    return self._write(rec, status=SagaStatus.FAILED, error=error)  # _drive reports "failed"
                _RETRIES.add(1, {"saga": rec.name, "step": step.name, "phase": "compensate"})
                self._sleep(policy.delay_s(attempt))
                continue
            rec = self._write(rec, steps=self._with_step(rec, move.index, state=StepState.COMPENSATED.value))
            self._emit("step_compensated", rec, step.name)
            return rec
        raise AssertionError("unreachable")  # pragma: no cover


def _check_payload(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    import json

    data = dict(payload or {})
    if not all(isinstance(k, str) for k in data):
        raise InvalidArgumentError("saga payload keys must be strings")
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"saga payload must be JSON-serialisable: {exc}") from exc
    return data


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(dumps(value))
