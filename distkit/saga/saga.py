"""What a saga is: an ordered list of steps, each with an action and (optionally) its compensation.

Definitions are plain data; :class:`~distkit.saga.SagaCoordinator` runs them and
:mod:`distkit.saga.flows` decides, from the persisted record alone, what happens next.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distkit.errors import InvalidArgumentError


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` tries in all; the n-th retry waits ``backoff_s * multiplier**(n-1)`` (capped at
    ``max_backoff_s``), spread by ``±jitter`` (a fraction) so many sagas don't retry in lockstep."""

    max_attempts: int = 1
    backoff_s: float = 0.0
    multiplier: float = 2.0
    max_backoff_s: float = 30.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise InvalidArgumentError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        for name in ("backoff_s", "multiplier", "max_backoff_s", "jitter"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise InvalidArgumentError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.jitter > 1:
            raise InvalidArgumentError(f"jitter is a fraction of the delay (0..1), got {self.jitter!r}")

    def delay_s(self, attempt: int, rnd: Callable[[], float] = random.random) -> float:
        """How long to wait after failed attempt number ``attempt`` (1-based) before the next one."""
        base = min(self.backoff_s * self.multiplier ** max(attempt - 1, 0), self.max_backoff_s)
        if self.jitter:
            base *= 1 + self.jitter * (2 * rnd() - 1)
        return max(base, 0.0)


@dataclass(frozen=True)
class StepContext:
    """What an action or compensation receives.

    ``idempotency_key`` is stable across retries, crashes and coordinators (``<saga_id>:<step>`` for the
    action, ``...:compensate`` for the compensation): pass it downstream so a repeated call is deduplicated.
    ``connection`` is set for :class:`SqlStep`: the SQLAlchemy connection of the transaction that also
    records the step's outcome in the saga log. ``action_completed`` tells a compensation whether the
    action is known to have finished (``False`` after a timeout: the action may or may not have run)."""

    saga_id: str
    saga: str
    step: str
    attempt: int
    idempotency_key: str
    payload: Mapping[str, Any]
    results: Mapping[str, Any]
    compensating: bool = False
    action_completed: bool = True
    connection: Any = None


Action = Callable[[StepContext], Any]
Compensation = Callable[[StepContext], Any]


@dataclass(frozen=True)
class Step:
    """A local step. ``action(ctx)`` returns a JSON-serialisable result (kept in the log, visible to later
    steps as ``ctx.results[name]``); raising fails the attempt. ``timeout_s`` bounds each attempt: a step that
    does not finish in time counts as failed *with unknown outcome*, so it is compensated too."""

    name: str
    action: Action
    compensate: Compensation | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float | None = None
    compensate_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_attempts=5, backoff_s=0.1))
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or len(self.name) > 100:
            raise InvalidArgumentError(f"a step needs a name of 1-100 characters, got {self.name!r}")
        if not callable(self.action):
            raise InvalidArgumentError(f"step {self.name!r}: action must be callable")
        if self.compensate is not None and not callable(self.compensate):
            raise InvalidArgumentError(f"step {self.name!r}: compensate must be callable or None")
        if self.timeout_s is not None and (
            isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, int | float) or not self.timeout_s > 0
        ):
            raise InvalidArgumentError(f"step {self.name!r}: timeout_s must be > 0, got {self.timeout_s!r}")

    kind = "local"


@dataclass(frozen=True)
class SqlStep(Step):
    """A step whose effect lives in the saga log's own database: ``action(ctx)`` runs on ``ctx.connection``
    inside the transaction that records the step as done, so effect and record commit together — exactly
    once, whatever crashes (and ``compensate`` likewise). The log must be a :class:`SqlSagaLog`."""

    kind = "sql"


@dataclass(frozen=True)
class RemoteStep:
    """A step carried out by another service over a broker (command/reply).

    The command (``{"saga_id", "step", "kind": "action"|"compensate", "idempotency_key", "payload"}``) goes to
    ``command_topic`` (``compensate_topic`` for the compensation, default the same topic); the service answers
    on ``reply_topic`` with :func:`distkit.saga.reply_for`. No reply within ``timeout_s`` → the step failed
    with unknown outcome → compensation (sent even so: the participant's fence makes an empty compensation
    safe); a success arriving after the timeout triggers that compensation again."""

    name: str
    command_topic: str
    reply_topic: str
    compensate_topic: str | None = None
    timeout_s: float = 30.0
    build_command: Callable[[StepContext], Any] | None = None
    compensate_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_attempts=5, backoff_s=0.2))

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or len(self.name) > 100:
            raise InvalidArgumentError(f"a step needs a name of 1-100 characters, got {self.name!r}")
        if not self.command_topic or not self.reply_topic:
            raise InvalidArgumentError(f"remote step {self.name!r} needs command_topic and reply_topic")
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, int | float) or not self.timeout_s > 0:
            raise InvalidArgumentError(f"remote step {self.name!r}: timeout_s must be > 0, got {self.timeout_s!r}")

    kind = "remote"
    retry = RetryPolicy()

    @property
    def compensate(self) -> bool:
        return True


AnyStep = Step | RemoteStep


class Saga:
    """A named, ordered list of steps. Names are unique within the saga (they key the log)."""

    def __init__(self, name: str, steps: Sequence[AnyStep]) -> None:
        if not isinstance(name, str) or not name or len(name) > 100:
            raise InvalidArgumentError(f"a saga needs a name of 1-100 characters, got {name!r}")
        if not steps:
            raise InvalidArgumentError(f"saga {name!r} needs at least one step")
        names = [s.name for s in steps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidArgumentError(f"saga {name!r} has duplicate step names {dupes}")
        self.name = name
        self.steps: tuple[AnyStep, ...] = tuple(steps)

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, steps={[s.name for s in self.steps]})"

    def step(self, name: str) -> AnyStep:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)
