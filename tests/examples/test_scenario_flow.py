"""The scenario flow against real Redis, Kafka and PostgreSQL, mailing a real SMTP server (aiosmtpd on loopback).

Mails are counted where the user would receive them: per request, exactly one UI mail, one MD mail and one
"all ready" mail, however often the result event is delivered and however the two consumers race.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from distkit.messaging import Message
from distkit.saga import SagaEvent, SagaStatus
from examples._wiring import Wiring
from examples.scenario_flow import main
from examples.scenario_flow.flow import ScenarioFlow
from examples.scenario_flow.mail import SmtpMailer

ROOT = Path(__file__).resolve().parents[2]


def _until(cond: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class MailDrop:
    """aiosmtpd handler: keeps every delivered mail's (recipient, subject)."""

    def __init__(self) -> None:
        self.mails: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook name
        msg = message_from_bytes(envelope.content)
        with self.lock:
            self.mails.extend((rcpt, str(msg["Subject"])) for rcpt in envelope.rcpt_tos)
        return "250 OK"

    def kinds(self, request_id: str) -> Counter[str]:
        """Mails received about ``request_id``, by kind (ui, md, all-ready, failed)."""
        out: Counter[str] = Counter()
        with self.lock:
            for _, subject in self.mails:
                if subject.startswith(f"[{request_id}] "):
                    text = subject.split("] ", 1)[1]
                    out["ui" if text.startswith("UI:") else "md" if text.startswith("MD:")
                        else "all-ready" if "all systems" in text else "failed"] += 1
        return out


@pytest.fixture
def smtp() -> Iterator[tuple[MailDrop, SmtpMailer]]:
    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    drop = MailDrop()
    controller = Controller(drop, hostname="127.0.0.1", port=port)
    controller.start()
    yield drop, SmtpMailer("127.0.0.1", port)
    controller.stop()


def test_app_invariants_hold_and_each_mail_arrives_once(wiring: Wiring, smtp: tuple[MailDrop, SmtpMailer]) -> None:
    drop, mailer = smtp
    story = main(wiring, mailer=mailer, threshold_s=2.0, redeliveries=3)  # the same event 4 times in all

    assert story.checks and all(story.checks.values()), story.checks
    ids: Any = story.facts["request_ids"]
    ok_id, late_id = ids["completed"], ids["timed_out"]
    assert drop.kinds(ok_id) == {"ui": 1, "md": 1, "all-ready": 1}
    assert drop.kinds(late_id) == {"failed": 1}
    assert len(drop.mails) == 4 and {to for to, _ in drop.mails} == {"ada@example.com"}
    assert story.facts["deliveries"] == {"ui": 4, "md": 4}  # delivered 4 times...
    assert story.facts["updates"] == {"ui": 1, "md": 1}  # ...applied once
    assert story.facts["statuses"] == {ok_id: ["DONE", "DONE"], late_id: ["FAILED", "CANCELLED"]}
    assert story.facts["compensations"] == {"ui_init": 1, "md_init": 1, "abinitio": 1}
    assert story.facts["jobs_cancelled"] == 1
    traces: Any = story.facts["trace_ids"]
    assert traces["ui"] == traces["md"] == [traces["ui_request"]] and int(traces["ui_request"], 16) != 0


def _result_event(request_id: str) -> Message:
    return Message(topic="results", value={"request_id": request_id, "status": "OK", "result": f"r-{request_id}"},
                   headers={"event-id": f"{request_id}:result"})


def test_racing_consumers_send_exactly_one_all_ready_mail(
    wiring: Wiring, smtp: tuple[MailDrop, SmtpMailer]
) -> None:
    """16 threads deliver the final result to both systems at the same instant, 5 requests in a row."""
    drop, mailer = smtp
    flow = ScenarioFlow(wiring, mailer)  # handlers called directly: no consumer groups needed
    try:
        ui, md = flow.handler(flow.ui), flow.handler(flow.md)
        request_ids = [f"race-{i}" for i in range(5)]
        for rid in request_ids:
            with wiring.engine.begin() as conn:
                flow.ui.create(conn, rid, "grace@example.com")
                flow.md.create(conn, rid, "grace@example.com")
            barrier = threading.Barrier(16)
            errors: list[BaseException] = []

            def deliver(handle: Any, rid: str = rid, barrier: threading.Barrier = barrier) -> None:
                try:
                    barrier.wait(10)
                    handle(_result_event(rid))
                except BaseException as exc:  # surfaced below
                    errors.append(exc)

            threads = [threading.Thread(target=deliver, args=(ui if i % 2 else md,)) for i in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert errors == []
            assert flow.deliveries[("ui", rid)] == flow.deliveries[("md", rid)] == 8
            assert flow.updates[("ui", rid)] == flow.updates[("md", rid)] == 1
            assert drop.kinds(rid) == {"ui": 1, "md": 1, "all-ready": 1}, drop.kinds(rid)
        assert len(drop.mails) == 3 * len(request_ids)
    finally:
        flow.close()


def test_result_after_the_timeout_changes_nothing(wiring: Wiring, smtp: tuple[MailDrop, SmtpMailer]) -> None:
    """The compensation won: a result event arriving afterwards neither revives the records nor mails."""
    drop, mailer = smtp
    flow = ScenarioFlow(wiring, mailer)
    try:
        with wiring.engine.begin() as conn:
            flow.ui.create(conn, "late-1", "lin@example.com")
            flow.md.create(conn, "late-1", "lin@example.com")
            assert flow.ui.cancel(conn, "late-1", "FAILED") == 1
            assert flow.md.cancel(conn, "late-1", "CANCELLED") == 1
        flow.handler(flow.ui)(_result_event("late-1"))
        flow.handler(flow.md)(_result_event("late-1"))
        assert [(flow.ui.get("late-1") or {}).get("status"), (flow.md.get("late-1") or {}).get("status")] == [
            "FAILED", "CANCELLED"]
        assert flow.updates == Counter() and drop.mails == []
    finally:
        flow.close()


class FlakyMailer:
    """The SMTP mailer, except that the first "UI ready" mail fails (the mail server hung up)."""

    def __init__(self, inner: SmtpMailer) -> None:
        self.inner, self.failures = inner, 0

    def send(self, to: str, subject: str, body: str) -> None:
        if "UI:" in subject and self.failures == 0:
            self.failures += 1
            raise smtplib.SMTPServerDisconnected("connection unexpectedly closed")
        self.inner.send(to, subject, body)


def test_mail_failure_after_the_update_is_retried_by_redelivery(
    wiring: Wiring, smtp: tuple[MailDrop, SmtpMailer]
) -> None:
    """The UI handler committed its update, then the mail failed: the event is re-read from Kafka, the update is
    not repeated (inbox), and the mail is sent then, once."""
    drop, mailer = smtp
    flaky = FlakyMailer(mailer)
    flow = ScenarioFlow(wiring, flaky, threshold_s=5.0)
    try:
        flow.start()
        assert flow.submit("flaky-1", "kim@example.com", runtime_s=0.05).ok
        deadline = time.monotonic() + 15
        while drop.kinds("flaky-1")["all-ready"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert flaky.failures == 1
        assert drop.kinds("flaky-1") == {"ui": 1, "md": 1, "all-ready": 1}
        assert flow.deliveries[("ui", "flaky-1")] == 2 and flow.updates[("ui", "flaky-1")] == 1
        assert flow.deliveries[("md", "flaky-1")] == 1 and flow.updates[("md", "flaky-1")] == 1
    finally:
        flow.close()


def test_the_apps_own_check_catches_a_second_mail_sent_by_a_slow_redelivery(
    wiring: Wiring, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app read its mail count as soon as the redelivery was *received*, before its handler had mailed: with
    the UI mail's idempotency broken on purpose and a slow mail server, the duplicate mail went out after the
    check and "redelivered event: no second mail" held (4 runs out of 4 with 50 ms per mail)."""
    from examples._story import InvariantFailed
    from examples.scenario_flow import notify

    made = notify.Notifier.__init__

    def without_ui_idempotency(self: notify.Notifier, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        guarded = self._mail
        self._mail = lambda key, *a: self._send(key, *a) if key.endswith(":ui") else guarded(key, *a)

    class SlowMailer:  # a mail server that takes its time over the UI mails
        def send(self, to: str, subject: str, body: str) -> None:
            time.sleep(0.3 if "UI:" in subject else 0.0)

    monkeypatch.setattr(notify.Notifier, "__init__", without_ui_idempotency)
    with pytest.raises(InvariantFailed, match="redelivered event"):
        main(wiring, mailer=SlowMailer(), threshold_s=1.0)


class FailedMailFailsOnce:
    """The SMTP mailer, except that the first "failed" mail fails (the mail server hung up)."""

    def __init__(self, inner: SmtpMailer) -> None:
        self.inner, self.failures = inner, 0

    def send(self, to: str, subject: str, body: str) -> None:
        if "failed" in subject and self.failures == 0:
            self.failures += 1
            raise smtplib.SMTPServerDisconnected("connection unexpectedly closed")
        self.inner.send(to, subject, body)


def _statuses(flow: ScenarioFlow, request_id: str) -> list[Any]:
    return [(flow.ui.get(request_id) or {}).get("status"), (flow.md.get(request_id) or {}).get("status")]


def test_failed_mail_is_retried_after_a_mail_server_error(
    wiring: Wiring, smtp: tuple[MailDrop, SmtpMailer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "failed" mail went out from the coordinator's ``compensated`` hook, whose errors are logged and dropped:
    one SMTP error meant no "failed" mail at all. It is sent from the UI's compensation now, which is retried; and
    a compensation that mailed but did not commit (here its log write fails, as in a crash) mails no second time."""
    drop, mailer = smtp
    flaky = FailedMailFailsOnce(mailer)
    flow = ScenarioFlow(wiring, flaky, threshold_s=0.5)
    write, lost = flow.log.write, []

    def write_once_lost(record: Any, *, connection: Any = None) -> Any:
        if record.step("ui_init")["state"] == "COMPENSATED" and not lost:  # after the mail, before the commit
            lost.append(record.version)
            raise ConnectionResetError("database connection lost before the commit")
        return write(record, connection=connection)

    monkeypatch.setattr(flow.log, "write", write_once_lost)
    try:
        flow.start()
        assert flow.submit("smtp-1", "kim@example.com", runtime_s=30).status.value == "COMPENSATED"
        assert flaky.failures == 1 and len(lost) == 1
        assert drop.kinds("smtp-1") == {"failed": 1}
        assert _statuses(flow, "smtp-1") == ["FAILED", "CANCELLED"]
        assert flow.compensations("smtp-1") == {"abinitio": 1, "md_init": 1, "ui_init": 1}
    finally:
        flow.close()


class ResultAtTheThreshold(ScenarioFlow):
    """The batch job finished just as the step timed out: its result reaches the UI before any compensation,
    and MD only after MD's compensation (forced from the saga's own events, no timing involved)."""

    def _on_event(self, ev: SagaEvent) -> None:
        super()._on_event(ev)
        if ev.kind == "step_failed" and ev.step == "abinitio":
            self.handler(self.ui)(_result_event(ev.saga_id))
        elif ev.kind == "step_compensated" and ev.step == "md_init":
            self.handler(self.md)(_result_event(ev.saga_id))


def test_result_reaching_the_ui_before_its_compensation_completes_the_request(
    wiring: Wiring, smtp: tuple[MailDrop, SmtpMailer]
) -> None:
    """The UI's record decides: it got the result first, so the request is DONE, MD follows (its compensation
    leaves the record to the result on its way) and the user gets "all ready". Before, MD's record was CANCELLED
    and the user got neither "all ready" nor "failed"."""
    drop, mailer = smtp
    flow = ResultAtTheThreshold(wiring, mailer, threshold_s=0.5)
    try:
        flow.start()
        assert flow.submit("edge-1", "lin@example.com", runtime_s=30).status.value == "COMPENSATED"
        assert _statuses(flow, "edge-1") == ["DONE", "DONE"]
        assert drop.kinds("edge-1") == {"ui": 1, "md": 1, "all-ready": 1}
        assert flow.updates == {("ui", "edge-1"): 1, ("md", "edge-1"): 1}
    finally:
        flow.close()


def _statuses_of(wiring: Wiring, request_id: str) -> list[Any]:
    from sqlalchemy import text

    with wiring.engine.connect() as conn:
        return [conn.execute(text(f"SELECT status FROM {wiring.table(t)} WHERE request_id = :r"),
                             {"r": request_id}).scalar() for t in ("ui_requests", "md_requests")]


CHILD = """
import sys
from sqlalchemy import create_engine
from distkit.config import Settings
from distkit.messaging.kafka import KafkaBroker
from examples._wiring import Wiring
from examples.scenario_flow.flow import ScenarioFlow
from examples.scenario_flow.mail import SmtpMailer

namespace, schema, port, request_id = sys.argv[1:5]
s = Settings.from_env()
broker = KafkaBroker(s.kafka_bootstrap, config={"group.instance.id": namespace})
engine = create_engine(s.database_url, connect_args={"options": f"-csearch_path={schema}"})
flow = ScenarioFlow(Wiring(redis=s.redis(), broker=broker, engine=engine, namespace=namespace, embedded=False,
                           settings=s), SmtpMailer("127.0.0.1", int(port)), threshold_s=120)
flow.start()
print("started", flush=True)
flow.submit(request_id, "max@example.com", runtime_s=120)
"""


@pytest.mark.slow
def test_a_restarted_flow_finishes_the_saga_of_a_killed_one(
    wiring: Wiring, smtp: tuple[MailDrop, SmtpMailer], pg_schema: str, kafka_bootstrap: str
) -> None:
    """A process running the flow is SIGKILLed while its saga waits for the batch result; a new flow on the same
    namespace takes the saga over once its lease runs out: the request FAILED, each compensation once, one mail.
    Both use one static Kafka group member id, so the new consumers take the dead ones' partitions at once
    instead of after the session timeout (as a restarted pod with a stable identity would)."""
    from distkit.messaging.kafka import KafkaBroker
    from distkit.saga import SqlSagaLog

    drop, mailer = smtp
    rid, ns = "kill-1", wiring.namespace
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, ns, pg_schema, str(mailer.port), rid], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, text=True)
    flow: ScenarioFlow | None = None
    broker = KafkaBroker(kafka_bootstrap, config={"group.instance.id": ns})
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "started"
        saga_log = SqlSagaLog(wiring.engine, table=wiring.table("sagas"))

        def waiting_for_the_batch() -> bool:
            rec = saga_log.get(rid)
            return rec is not None and rec.step("abinitio")["state"] == "RUNNING"

        assert _until(waiting_for_the_batch, 20)
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
        assert _statuses_of(wiring, rid) == ["PENDING", "PENDING"]

        restarted = Wiring(redis=wiring.redis, broker=broker, engine=wiring.engine, namespace=ns, embedded=False,
                           settings=wiring.settings)
        flow = new = ScenarioFlow(restarted, mailer, threshold_s=0.5)
        new.start()
        assert _until(lambda: new.coord.status(rid) == SagaStatus.COMPENSATED, 15), new.coord.status(rid)
        assert _statuses(flow, rid) == ["FAILED", "CANCELLED"]
        assert flow.compensations(rid) == {"abinitio": 1, "md_init": 1, "ui_init": 1}
        assert new.batch.cancelled == [rid]  # the resumed saga's job, killed once
        assert drop.kinds(rid) == {"failed": 1} and len(drop.mails) == 1
    finally:
        if child.poll() is None:
            child.kill()
        if flow is not None:
            flow.close()
        broker.close()
