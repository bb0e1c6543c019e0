"""Load balancers: pick one instance of a service for each request.

* :class:`RoundRobin` — each instance in turn; fair under concurrency (one shared counter).
* :class:`WeightedRoundRobin` — nginx's *smooth* weighted round-robin (weights 5,1,1 → a a b a c a a): no
  bursts to the heavy instance.
* :class:`LeastRequests` — Envoy's power of two choices on in-flight requests: pick two at random, take the
  less busy. Call :meth:`LeastRequests.track` around the request so it knows.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from distkit.errors import NoInstanceError
from distkit.gateway.registry import ServiceInstance


class Balancer(Protocol):
    def choose(self, instances: Sequence[ServiceInstance]) -> ServiceInstance: ...

    def track(self, instance: ServiceInstance) -> AbstractContextManager[None]: ...


def _require(instances: Sequence[ServiceInstance]) -> None:
    if not instances:
        raise NoInstanceError("no live instance to choose from")


class _Untracked:
    @contextmanager
    def track(self, instance: ServiceInstance) -> Iterator[None]:
        yield


class RoundRobin(_Untracked):
    def __init__(self) -> None:
        self._counter = itertools.count()  # next() on a count is atomic in CPython: no lock needed

    def choose(self, instances: Sequence[ServiceInstance]) -> ServiceInstance:
        _require(instances)
        return instances[next(self._counter) % len(instances)]


class WeightedRoundRobin(_Untracked):
    """nginx's smooth weighted round-robin over ``instance.weight`` (state kept per instance id)."""

    def __init__(self) -> None:
        self._current: dict[str, int] = {}
        self._lock = threading.Lock()

    def choose(self, instances: Sequence[ServiceInstance]) -> ServiceInstance:
        _require(instances)
        with self._lock:
            total = 0
            best: ServiceInstance | None = None
            best_weight = 0
            live = set()
            for inst in instances:
                w = max(int(inst.weight), 0)
                live.add(inst.instance_id)
                cur = self._current.get(inst.instance_id, 0) + w
                self._current[inst.instance_id] = cur
                total += w
                if best is None or cur > best_weight:
                    best, best_weight = inst, cur
            assert best is not None
            self._current[best.instance_id] -= total
            for gone in set(self._current) - live:
                del self._current[gone]
            return best


class LeastRequests:
    """Power of two choices on the number of requests in flight to each instance."""

    def __init__(self, *, rng: random.Random | None = None) -> None:
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()
        self._rng = rng or random.Random()

    def in_flight(self, instance: ServiceInstance) -> int:
        return self._in_flight.get(instance.instance_id, 0)

    def choose(self, instances: Sequence[ServiceInstance]) -> ServiceInstance:
        _require(instances)
        if len(instances) == 1:
            return instances[0]
        a, b = self._rng.sample(range(len(instances)), 2)
        ia, ib = instances[a], instances[b]
        return ia if self.in_flight(ia) <= self.in_flight(ib) else ib

    @contextmanager
    def track(self, instance: ServiceInstance) -> Iterator[None]:
        with self._lock:
            self._in_flight[instance.instance_id] = self._in_flight.get(instance.instance_id, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._in_flight.get(instance.instance_id, 1) - 1
                if left:
                    self._in_flight[instance.instance_id] = left
                else:
                    self._in_flight.pop(instance.instance_id, None)
