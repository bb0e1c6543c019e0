"""The request's flow on one :class:`~examples._wiring.Wiring`: the UI and MD systems, the batch system, the saga
(:mod:`~examples.scenario_flow.request_saga`: its steps, and the rule deciding a late request) and three consumer
groups. ``start()`` also resumes the sagas a dead predecessor left waiting: a restarted service takes them over
once their lease has run out and finishes them (the result, or the compensation and the "failed" mail)."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from distkit.idempotency import Inbox
from distkit.messaging import Message
from distkit.saga import Command, SagaCoordinator, SagaEvent, SagaResult, SqlSagaLog, reply_for
from distkit.tracing import request_context, traced_handler
from examples._wiring import Wiring
from examples.scenario_flow.batch import BatchSystem
from examples.scenario_flow.consumer import consume, log
from examples.scenario_flow.mail import Mailer
from examples.scenario_flow.notify import Notifier
from examples.scenario_flow.request_saga import request_saga
from examples.scenario_flow.systems import DONE, SystemDb

# How long a saga stays its coordinator's after the last heartbeat (one every LEASE_S / 3). Short so that a
# restarted demo service takes over its predecessor's waiting requests within seconds; a false takeover (a
# stalled coordinator) only repeats the batch command under the same key, which the batch system ignores.
LEASE_S = 2.0


def _trace_id() -> str:
    return format(trace.get_current_span().get_span_context().trace_id, "032x")


class ScenarioFlow:
    """UI → MD → Abinitio for one run; ``start()`` the consumers, ``submit()`` requests, ``close()``."""

    def __init__(self, wiring: Wiring, mailer: Mailer, *, threshold_s: float = 1.5) -> None:
        ns, broker, engine = wiring.namespace, wiring.broker, wiring.engine
        self.wiring = wiring
        self.jobs, self.replies, self.results = (wiring.topic(t) for t in ("jobs", "replies", "results"))
        for topic in (self.jobs, self.replies, self.results):
            broker.create_topic(topic, 2)
        self.tracing = TracerProvider()  # this app's own provider: nothing global is touched
        inbox = Inbox(engine, table=wiring.table("inbox"))
        self.ui = SystemDb("ui", engine, wiring.table("ui_requests"), inbox, cancelled="FAILED")
        self.md = SystemDb("md", engine, wiring.table("md_requests"), inbox, cancelled="CANCELLED")
        self.notifier = Notifier(wiring.redis, mailer, ns, ("ui", "md"))
        self.batch = BatchSystem(broker, self.results, f"{ns}-abinitio", self.tracing)
        self.saga = request_saga(self.ui, self.md, self.notifier, jobs=self.jobs, replies=self.replies,
                                 threshold_s=threshold_s)
        self.log = SqlSagaLog(engine, table=wiring.table("sagas"))
        self.coord = SagaCoordinator(self.log, broker, reply_group=f"{ns}-saga-replies", on_event=self._on_event,
                                     lease_s=LEASE_S)
        self.events: list[SagaEvent] = []
        self.request_traces: dict[str, str] = {}
        self.seen_traces: dict[tuple[str, str], set[str]] = defaultdict(set)  # (system, request) -> trace ids
        self.deliveries: Counter[tuple[str, str]] = Counter()
        self.handled: Counter[tuple[str, str]] = Counter()  # deliveries whose handler returned
        self.updates: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _on_event(self, ev: SagaEvent) -> None:
        with self._lock:
            self.events.append(ev)

    def _resume(self) -> None:
        """Every half lease: take over (and finish) the sagas whose coordinator died, e.g. this one's predecessor."""
        while True:
            try:
                self.coord.resume_pending()
            except Exception:  # logged; the next round tries again
                log.exception("resuming pending sagas failed")
            if self._stop.wait(LEASE_S / 2):
                return

    def handler(self, system: SystemDb) -> Callable[[Message], None]:
        """``system``'s consumer of the batch result: one update, one mail, the trace id it ran under."""

        @traced_handler(span_name=f"{system.name}.batch_result", tracer_provider=self.tracing)
        def handle(msg: Message) -> None:
            rid = str(msg.value["request_id"])
            with self._lock:
                self.deliveries[(system.name, rid)] += 1
                self.seen_traces[(system.name, rid)].add(_trace_id())
            if system.apply_result(msg.header("event-id") or f"{rid}:result", rid, str(msg.value["result"])):
                with self._lock:
                    self.updates[(system.name, rid)] += 1
            row = system.get(rid)
            if row is not None and row["status"] == DONE:  # also after a crash between commit and mail
                self.notifier.system_done(rid, system.name, row["user_email"])
            with self._lock:
                self.handled[(system.name, rid)] += 1  # this delivery's mails are out: a check may count them now

        return handle

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the three consumer groups, wait until each one and the saga's reply listener read, then resume."""
        self.coord.register(self.saga)
        groups = [("abinitio", self.jobs, self.batch.handle), ("ui", self.results, self.handler(self.ui)),
                  ("md", self.results, self.handler(self.md))]
        ready = []
        for name, topic, fn in groups:
            ev = threading.Event()
            args = (self.wiring.broker, f"{self.wiring.namespace}-{name}", topic, fn, self._stop, ev)
            t = threading.Thread(target=consume, args=args, name=f"scenario-{name}", daemon=True)
            t.start()
            self._threads.append(t)
            ready.append(ev)
        probe = Command(f"probe-{self.coord.owner}", "probe", "action", 1, "probe", {}, self.replies)  # to no saga
        with self.wiring.broker.transactional_producer(f"{self.wiring.namespace}-probe") as tx:
            tx.send(self.replies, reply_for(probe), key="probe")
        deadline = time.monotonic() + timeout_s
        while not (all(ev.is_set() for ev in ready) and self.log.get_reply(probe.saga_id, "probe", "action", 1)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumers not reading after {timeout_s} s")
            time.sleep(0.05)
        resumer = threading.Thread(target=self._resume, name="scenario-resume", daemon=True)
        resumer.start()
        self._threads.append(resumer)

    def submit(self, request_id: str, user: str, runtime_s: float) -> SagaResult:
        """The UI request: a root span, then the saga in this thread (so its commands carry the trace)."""
        with self.tracing.get_tracer("scenario.ui").start_as_current_span("POST /requests"), \
                request_context(request_id=request_id):
            self.request_traces[request_id] = _trace_id()
            return self.coord.run(self.saga, request_id, {"user": user, "request_id": request_id,
                                                          "runtime_s": runtime_s})

    def compensations(self, request_id: str) -> Counter[str]:
        with self._lock:
            return Counter(e.step or "" for e in self.events if e.saga_id == request_id
                           and e.kind == "step_compensated")

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        self.coord.close()
        self.batch.close()
        self.notifier.close()
        self.tracing.shutdown()
