"""The saga state machine, with no I/O: from a saga's persisted record, what happens next.

The coordinator writes each decision to the log *before* carrying it out, so after a crash the same record
gives the same next move and a new coordinator resumes exactly where the old one stopped.

Step states: ``PENDING`` → ``RUNNING`` (attempt started, outcome not yet recorded) → ``DONE`` | ``FAILED``
(the action raised: it had no effect) | ``TIMED_OUT`` (outcome unknown). Compensation: ``COMPENSATING`` →
``COMPENSATED``; ``SKIPPED`` when there is nothing to undo (never started, failed cleanly, no compensation).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class SagaStatus(str, enum.Enum):
    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"  # a compensation kept failing: an operator must look (coordinator.stuck())

    @property
    def terminal(self) -> bool:
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED)


class StepState(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    SKIPPED = "SKIPPED"


# states whose action may have had an effect, so compensation must run
NEEDS_COMPENSATION = frozenset({StepState.DONE, StepState.TIMED_OUT, StepState.COMPENSATING})


@dataclass(frozen=True)
class RunAction:
    index: int
    attempt: int  # the attempt about to start (1-based)


@dataclass(frozen=True)
class Compensate:
    index: int
    attempt: int


@dataclass(frozen=True)
class Finish:
    status: SagaStatus


Move = RunAction | Compensate | Finish


def new_steps(names: list[str]) -> list[dict[str, Any]]:
    return [{"name": n, "state": StepState.PENDING.value, "attempts": 0, "comp_attempts": 0} for n in names]


def next_move(status: SagaStatus, steps: list[dict[str, Any]]) -> Move:
    """The next thing to do for a saga in ``status`` whose steps are ``steps`` (the log's records)."""
    if status.terminal:
        return Finish(status)
    if status is SagaStatus.RUNNING:
        for i, s in enumerate(steps):
            state = StepState(s["state"])
            if state is StepState.DONE:
                continue
            if state in (StepState.PENDING, StepState.RUNNING):
                # RUNNING after a crash: the attempt's outcome is unknown, run it again under the same key
                return RunAction(i, int(s["attempts"]) + (1 if state is StepState.PENDING else 0))
            raise AssertionError(f"step {s['name']!r} is {state.value} in a RUNNING saga")  # pragma: no cover
        return Finish(SagaStatus.COMPLETED)
    # COMPENSATING: undo, in reverse order, every step whose action may have had an effect
    for i in range(len(steps) - 1, -1, -1):
        state = StepState(steps[i]["state"])
        if state in NEEDS_COMPENSATION:
            attempts = int(steps[i]["comp_attempts"]) + (0 if state is StepState.COMPENSATING else 1)
            return Compensate(i, max(attempts, 1))
    return Finish(SagaStatus.COMPENSATED)


def after_action_failed(steps: list[dict[str, Any]], index: int, *, timed_out: bool) -> list[dict[str, Any]]:
    """The record after step ``index``'s last attempt failed: it is FAILED (no effect) or TIMED_OUT (maybe an
    effect), every later step is SKIPPED, and the saga turns to compensation."""
    out = [dict(s) for s in steps]
    out[index]["state"] = (StepState.TIMED_OUT if timed_out else StepState.FAILED).value
    for s in out[index + 1 :]:
        s["state"] = StepState.SKIPPED.value
    return out


def is_consistent_outcome(status: SagaStatus, steps: list[dict[str, Any]]) -> bool:
    """The saga guarantee: a finished saga either did every step, or undid every step it did (never a mix).
    A FAILED saga is the documented exception (a compensation gave up; an operator must finish it)."""
    states = {StepState(s["state"]) for s in steps}
    if status is SagaStatus.COMPLETED:
        return states == {StepState.DONE}
    if status is SagaStatus.COMPENSATED:
        return states <= {StepState.COMPENSATED, StepState.SKIPPED, StepState.FAILED}
    return status is SagaStatus.FAILED
