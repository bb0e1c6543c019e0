"""A fault hook around a real broker's transactional producer: raise on the n-th call of a method, before
or after the real call went through (the "after" case is a commit whose outcome the caller never learns)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

Fault = tuple[str, Callable[[], BaseException]]  # ("before" | "after" | "hang", exception factory)


class FaultPlan:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.plan: dict[tuple[str, int], Fault] = {}
        self.fired: list[tuple[str, int, str]] = []
        self.lock = threading.Lock()

    def at(self, method: str, nth: int, when: str, exc: Callable[[], BaseException]) -> FaultPlan:
        self.plan[(method, nth)] = (when, exc)
        return self

    def hit(self, method: str) -> Fault | None:
        with self.lock:
            self.calls[method] += 1
            fault = self.plan.pop((method, self.calls[method]), None)
            if fault is not None:
                self.fired.append((method, self.calls[method], fault[0]))
            return fault


class FaultyProducer:
    def __init__(self, inner: Any, plan: FaultPlan) -> None:
        self._inner, self._plan = inner, plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _wrap(self, name: str, *args: Any, **kwargs: Any) -> Any:
        fault = self._plan.hit(name)
        if fault is not None and fault[0] == "before":
            raise fault[1]()
        result = getattr(self._inner, name)(*args, **kwargs)
        if fault is not None:
            raise fault[1]()
        return result

    def begin(self) -> None:
        self._wrap("begin")

    def send(self, *args: Any, **kwargs: Any) -> None:
        self._wrap("send", *args, **kwargs)

    def send_raw(self, *args: Any, **kwargs: Any) -> None:
        self._wrap("send_raw", *args, **kwargs)

    def send_offsets(self, *args: Any, **kwargs: Any) -> None:
        self._wrap("send_offsets", *args, **kwargs)

    def commit(self) -> None:
        self._wrap("commit")

    def abort(self) -> None:
        self._wrap("abort")


class FaultyBroker:
    """Delegates to ``inner``; its transactional producers go through ``plan``."""

    def __init__(self, inner: Any, plan: FaultPlan) -> None:
        self._inner, self.plan = inner, plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def transactional_producer(self, tid: str) -> FaultyProducer:
        return FaultyProducer(self._inner.transactional_producer(tid), self.plan)

    def new_transactional_producer(self, tid: str) -> FaultyProducer:
        return FaultyProducer(self._inner.new_transactional_producer(tid), self.plan)
