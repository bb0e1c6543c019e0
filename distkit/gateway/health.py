"""Passive health checks (Envoy's outlier detection): eject an instance after N consecutive failures.

An ejected instance is skipped for ``base_ejection_s * (number of times it was ejected)`` (capped), then
gets traffic again; at most ``max_ejected_share`` of a service's instances are ejected at once, so a
service-wide problem never empties the pool. The registry stays the source of truth for what exists.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from distkit.errors import InvalidArgumentError
from distkit.gateway.registry import ServiceInstance


@dataclass
class _Stats:
    consecutive: int = 0
    ejections: int = 0
    ejected_until: float = 0.0


class OutlierDetector:
    def __init__(
        self,
        *,
        consecutive_failures: int = 5,
        base_ejection_s: float = 30.0,
        max_ejection_s: float = 300.0,
        max_ejected_share: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if consecutive_failures < 1 or base_ejection_s <= 0 or not 0 <= max_ejected_share <= 1:
            raise InvalidArgumentError("consecutive_failures >= 1, base_ejection_s > 0, 0 <= max_ejected_share <= 1")
        self.consecutive_failures = consecutive_failures
        self.base_ejection_s = base_ejection_s
        self.max_ejection_s = max_ejection_s
        self.max_ejected_share = max_ejected_share
        self._clock = clock
        self._stats: dict[str, _Stats] = {}
        self._lock = threading.Lock()

    def record(self, instance: ServiceInstance, ok: bool, instances: Sequence[ServiceInstance] = ()) -> None:
        """Count one outcome (``ok=False``: connect error or 5xx). ``instances``: the service's live set, for the
        share limit."""
        with self._lock:
            st = self._stats.setdefault(instance.instance_id, _Stats())
            if ok:
                st.consecutive = 0
                return
            st.consecutive += 1
            if st.consecutive < self.consecutive_failures or self._is_ejected(st):
                return
            now = self._clock()
            ejected = sum(1 for i in instances if self._is_ejected(self._stats.get(i.instance_id)))
            if instances and ejected + 1 > int(len(instances) * self.max_ejected_share):
                return  # would eject too many: keep it in rotation
            st.ejections += 1
            st.ejected_until = now + min(self.base_ejection_s * st.ejections, self.max_ejection_s)
            st.consecutive = 0

    def _is_ejected(self, st: _Stats | None) -> bool:
        return st is not None and st.ejected_until > self._clock()

    def ejected(self, instance: ServiceInstance) -> bool:
        with self._lock:
            return self._is_ejected(self._stats.get(instance.instance_id))

    def healthy(self, instances: Sequence[ServiceInstance]) -> list[ServiceInstance]:
        """The instances not currently ejected (all of them if that would leave none)."""
        with self._lock:
            ok = [i for i in instances if not self._is_ejected(self._stats.get(i.instance_id))]
        return ok or list(instances)
