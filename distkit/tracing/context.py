"""Request context that follows the request: into threads, asyncio tasks and (as baggage) across Kafka.

The seed used an ``InheritableThreadLocal`` for "which shard, which user"; it was lost in thread pools.
Here the values live in a :class:`contextvars.ContextVar`, which asyncio tasks copy natively and
:class:`ContextExecutor` copies for each task it runs, so the value a task sees is the one of the request
that submitted it — never another request's.

>>> with request_context(tenant="cn-east", shard="db_3"):
...     with request_context(user_id=42):
...         dict(current_request_context())
{'tenant': 'cn-east', 'shard': 'db_3', 'user_id': 42}
>>> dict(current_request_context())
{}
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, ParamSpec, TypeVar

from distkit.errors import InvalidArgumentError

P = ParamSpec("P")
T = TypeVar("T")


class RequestState:
    """One request's values plus what the request did (the shards it wrote to, for read-your-writes).

    A child context (a :class:`ContextExecutor` task, an asyncio task) shares the same state object, so a
    write made in a task is seen by the request's later reads wherever they run."""

    __slots__ = ("values", "written")

    def __init__(self, values: Mapping[str, Any], written: set[str] | None = None) -> None:
        self.values: Mapping[str, Any] = MappingProxyType(dict(values))
        self.written: set[str] = written if written is not None else set()


_EMPTY = RequestState({})
_STATE: contextvars.ContextVar[RequestState] = contextvars.ContextVar("distkit_request_context", default=_EMPTY)


def _check_key(name: str) -> None:
    if not name or not name.isidentifier() or not name.isascii():
        raise InvalidArgumentError(f"request context names must be ASCII identifiers, got {name!r}")


@contextmanager
def request_context(**values: Any) -> Iterator[Mapping[str, Any]]:
    """Add ``values`` to the request context for the ``with`` block (nested blocks add to and shadow the outer
    ones); yields the merged, read-only mapping. Values cross Kafka as W3C baggage, i.e. as text."""
    for name in values:
        _check_key(name)
    outer = _STATE.get()
    merged = {**outer.values, **values}
    # a nested block is the same request: it keeps the request's write record
    state = RequestState(merged, outer.written if outer is not _EMPTY else None)
    token = _STATE.set(state)
    try:
        yield state.values
    finally:
        _STATE.reset(token)


def current_request_context() -> Mapping[str, Any]:
    """The request context visible here (read-only; empty outside any :func:`request_context`)."""
    return _STATE.get().values


def has_request_context() -> bool:
    """True inside a :func:`request_context` with values (one context-variable lookup)."""
    return _STATE.get() is not _EMPTY


def current_request_state() -> RequestState:
    """The request's state object (values + write record); used by :mod:`distkit.tracing.routing`."""
    return _STATE.get()


class ContextExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in a copy of the submitter's context: request context and the
    current OpenTelemetry span (both contextvars) follow every task, nested executors included."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        ctx = contextvars.copy_context()  # one copy per task: a Context can't be entered by two threads at once

        def run() -> T:
            return ctx.run(fn, *args, **kwargs)

        return super().submit(run)
