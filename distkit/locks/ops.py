"""Sans-I/O plumbing shared by the sync and asyncio lock classes.

Every lock operation (acquire, release, state queries) is written once, as a generator that *yields* the
I/O it needs (:class:`Call` a script, :class:`Subscribe` to a wake-up channel, :class:`Wait` for a wake-up,
...) and receives the result. :func:`drive` runs such a flow with blocking I/O, :func:`adrive` with
``await``; exceptions raised by the I/O are thrown back into the flow, so its cleanup (leave a fair queue,
unsubscribe) is written once too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from distkit._redis import Script

T = TypeVar("T")


class Signal(Protocol):
    """What a waiter blocks on: ``threading.Event`` or ``asyncio.Event``."""

    def set(self) -> None: ...

    def clear(self) -> None: ...


@dataclass(eq=False, slots=True)
class Waiter:
    """One blocked acquire: woken when a message on ``channel`` carries ``""`` or its own ``holder`` id."""

    channel: str
    holder: str
    signal: Signal


@dataclass(eq=False, slots=True)
class Call:
    """Run a Lua script; the flow receives its reply."""

    script: Script
    keys: Sequence[str | bytes]
    args: Sequence[str | bytes | int]
    deadline: float | None = None  # time.monotonic() by which the call returns or raises (None: the default)


@dataclass(frozen=True, slots=True)
class Command:
    """Run one plain (read-only) Redis command; the flow receives its reply."""

    args: tuple[str | bytes | int, ...]
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Join the wake-up channel (one shared listener per ``Locks``); the flow receives a :class:`Waiter`."""

    channel: str
    holder: str
    deadline: float | None = None  # stop waiting for the subscription's confirmation by then


@dataclass(frozen=True, slots=True)
class Wait:
    """Block until the waiter is signalled or ``seconds`` pass (the bounded re-check)."""

    waiter: Waiter
    seconds: float


@dataclass(frozen=True, slots=True)
class Sleep:
    """Pause (the back-off between retries of an acquire during an outage)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Leave the wake-up channel; never raises."""

    waiter: Waiter


Op = Call | Command | Subscribe | Wait | Sleep | Unsubscribe
Flow = Generator[Op, Any, T]


class Step(Generic[T]):
    """A flow between two I/O operations: the pending ``op``, or the ``result`` once it has finished."""

    __slots__ = ("flow", "op", "result", "running")

    def __init__(self, flow: Flow[T]) -> None:
        self.flow = flow
        self.running = True
        self.feed(None, None)

    def feed(self, value: Any, error: BaseException | None) -> None:
        """Hand the last operation's result (or its exception) to the flow and take the next operation."""
        try:
            self.op: Op = self.flow.send(value) if error is None else self.flow.throw(error)
        except StopIteration as done:
            self.running = False
            self.result: T = done.value


def drive(flow: Flow[T], execute: Callable[[Op], Any]) -> T:
    """Run ``flow`` to completion with a blocking ``execute``."""
    step = Step(flow)
    while step.running:
        try:
            value = execute(step.op)
        except BaseException as exc:  # handed to the flow, which cleans up and re-raises
            step.feed(None, exc)
        else:
            step.feed(value, None)
    return step.result


async def adrive(flow: Flow[T], execute: Callable[[Op], Awaitable[Any]]) -> T:
    """Run ``flow`` to completion with an awaitable ``execute`` (cancellation is thrown into the flow)."""
    step = Step(flow)
    while step.running:
        try:
            value = await execute(step.op)
        except BaseException as exc:  # CancelledError included: the flow leaves nothing behind, then re-raises
            step.feed(None, exc)
        else:
            step.feed(value, None)
    return step.result
