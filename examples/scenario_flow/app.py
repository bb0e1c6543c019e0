"""The scenario flow's story: a request that completes, a redelivered event, a request the batch never answers."""

from __future__ import annotations

import time
from collections.abc import Callable

from distkit.idgen import Snowflake
from examples._story import Story
from examples._wiring import Wiring
from examples.scenario_flow.flow import ScenarioFlow
from examples.scenario_flow.mail import Mailer, RecordingMailer


def _wait(cond: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def main(wiring: Wiring | None = None, *, mailer: Mailer | None = None, threshold_s: float = 1.5,
         redeliveries: int = 1) -> Story:
    """Run the three scenarios; ``mailer`` defaults to one that prints, ``threshold_s`` is the batch deadline."""
    own = wiring is None
    w = wiring if wiring is not None else Wiring.from_env()
    story = Story("scenario flow: UI -> MD -> Abinitio, results over Kafka to two consumer groups")
    flow = ScenarioFlow(w, mailer or RecordingMailer(story.step), threshold_s=threshold_s)
    ids = Snowflake(worker_id=1)
    try:
        flow.start()
        story.step(f"consumer groups ui, md, abinitio and the saga's reply listener read; threshold {threshold_s} s")
        ok_id, late_id, user = f"req-{ids.next_id()}", f"req-{ids.next_id()}", "ada@example.com"

        result = flow.submit(ok_id, user, runtime_s=0.1)
        story.step(f"{ok_id}: UI and MD records created, Abinitio answered -> saga {result.status.value}")
        mailed = _wait(lambda: all(flow.handled[(s, ok_id)] >= 1 for s in ("ui", "md")))
        ui, md = flow.ui.get(ok_id) or {}, flow.md.get(ok_id) or {}
        story.step(f"{ok_id}: UI {ui.get('status')}, MD {md.get('status')}, 'all ready' mailed")
        first = flow.notifier.count(ok_id)

        flow.batch.republish(ok_id, redeliveries)
        story.step(f"{ok_id}: the same result event published {redeliveries} more time(s)")
        redelivered = _wait(lambda: all(flow.handled[(s, ok_id)] == 1 + redeliveries for s in ("ui", "md")))
        after = flow.notifier.count(ok_id)
        got = {s: flow.deliveries[(s, ok_id)] for s in ("ui", "md")}
        updates = {s: flow.updates[(s, ok_id)] for s in ("ui", "md")}
        story.step(f"{ok_id}: deliveries {got}, updates {updates}, mails {after}")

        failed = flow.submit(late_id, user, runtime_s=threshold_s * 20)
        ui_late, md_late = flow.ui.get(late_id) or {}, flow.md.get(late_id) or {}
        story.step(f"{late_id}: no batch result in {threshold_s} s -> saga {failed.status.value}, "
                   f"UI {ui_late.get('status')}, MD {md_late.get('status')}")
        comps = flow.compensations(late_id)
        late_mails = flow.notifier.count(late_id)

        traces = {s: sorted(flow.seen_traces[(s, ok_id)]) for s in ("ui", "md")}
        story.fact("request_ids", {"completed": ok_id, "timed_out": late_id})
        story.fact("mails", {ok_id: after, late_id: late_mails})
        story.fact("updates", updates)
        story.fact("deliveries", got)
        story.fact("statuses", {ok_id: [ui.get("status"), md.get("status")],
                                late_id: [ui_late.get("status"), md_late.get("status")]})
        story.fact("compensations", dict(comps))
        story.fact("jobs_cancelled", flow.batch.cancelled.count(late_id))
        story.fact("trace_ids", {"ui_request": flow.request_traces[ok_id], **traces})

        story.check("completed request: saga COMPLETED, UI and MD records DONE",
                    result.ok and ui.get("status") == md.get("status") == "DONE", f"{ui.get('result')}")
        story.check("one mail per system and one 'all ready' mail", mailed and first == after and
                    first == {"ui": 1, "md": 1, "all-ready": 1, "failed": 0}, str(first))
        story.check("redelivered event: no second update, no second mail",
                    redelivered and updates == {"ui": 1, "md": 1} and after == first, f"deliveries {got}")
        story.check("no result in time: request FAILED, MD CANCELLED, user mailed once",
                    failed.status.value == "COMPENSATED" and ui_late.get("status") == "FAILED"
                    and md_late.get("status") == "CANCELLED" and late_mails["failed"] == 1
                    and sum(late_mails.values()) == 1, str(late_mails))
        story.check("each compensation ran exactly once",
                    comps == {"abinitio": 1, "md_init": 1, "ui_init": 1}
                    and flow.batch.cancelled.count(late_id) == 1, str(dict(comps)))
        story.check("one trace id from the UI request to both consumers",
                    traces["ui"] == traces["md"] == [flow.request_traces[ok_id]], str(traces))
    finally:
        flow.close()
        ids.close()
        if own:
            w.close()
    return story.finish()
