"""The request's saga, and the rule that decides a request the batch system did not answer in time.

Steps: ``md_init`` and ``ui_init`` (:class:`~distkit.saga.SqlStep`: each record commits with the saga log's
own record of the step, exactly once), then ``abinitio``, a :class:`~distkit.saga.RemoteStep` whose
``timeout_s`` is the threshold. No reply in time → the saga compensates in reverse: the batch job is killed,
then the UI decides, then MD follows (``ui_init`` comes after ``md_init`` for that order alone).

The rule: the UI's record is the request's status. The UI's compensation marks a PENDING record FAILED and
mails "failed" from inside the step, through the idempotent mail with its stable key: the saga retries a
compensation that raised (a mail server error rolls the record back too) and runs it again after a crash, and
the key keeps the mail single. A result that reached the UI first wins (DONE, no "failed" mail); MD's
compensation then leaves MD's record PENDING, since the same result is on the results topic and will reach MD,
whose consumer sends the "all ready" mail. Otherwise MD's record is CANCELLED, unless the result reached MD
before the UI decided (MD DONE, its own mail said so; the request is FAILED): one final mail either way.
"""

from __future__ import annotations

from distkit.saga import RemoteStep, RetryPolicy, Saga, SqlStep, StepContext
from examples.scenario_flow.notify import Notifier
from examples.scenario_flow.systems import DONE, SystemDb

# A mail server that is down fails the UI's compensation; it is retried for ~20 s in all before the saga is
# left FAILED for an operator (coordinator.stuck()): long enough for a blip, short enough to hold no thread long.
MAIL_RETRY = RetryPolicy(max_attempts=10, backoff_s=0.1, max_backoff_s=5.0)


def request_saga(ui: SystemDb, md: SystemDb, notifier: Notifier, *, jobs: str, replies: str,
                 threshold_s: float) -> Saga:
    """``scenario_request`` on these two systems, mailing through ``notifier``; ``threshold_s``: batch deadline."""

    def ui_decides(ctx: StepContext) -> str | None:
        ui.cancel_step(ctx)
        row = ui.get(ctx.saga_id, ctx.connection)
        if row is not None and row["status"] == ui.cancelled:
            notifier.failed(ctx.saga_id, row["user_email"])
        return row["status"] if row is not None else None

    def md_follows(ctx: StepContext) -> int:
        decided = ui.get(ctx.saga_id, ctx.connection)  # committed by the UI's compensation, which ran first
        return 0 if decided is not None and decided["status"] == DONE else md.cancel_step(ctx)

    return Saga("scenario_request", steps=[
        SqlStep("md_init", action=md.init_step, compensate=md_follows),
        SqlStep("ui_init", action=ui.init_step, compensate=ui_decides, compensate_retry=MAIL_RETRY),
        RemoteStep("abinitio", command_topic=jobs, reply_topic=replies, timeout_s=threshold_s),
    ])
