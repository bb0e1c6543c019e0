"""``MemoryBreakerStore``: the shared-store contract inside one process (several breakers of the same name
share one window and one probe budget). It is the reference of ``lua/_breaker.lua`` and lets the shared
behaviour run on a fake clock; production sharing across processes needs :class:`RedisBreakerStore`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from distkit.clock import Clock
from distkit.resilience.breaker import CODE_STATE, BreakerConfig
from distkit.resilience.stores.base import Flusher, View

_CLOSED, _OPEN, _HALF = 0, 1, 2


@dataclass
class _Shared:
    st: int = _CLOSED
    ep: int = 0
    since: int = 0
    forced: bool = False
    iss: int = 0
    dn: int = 0
    pf: int = 0
    ps: int = 0
    ring: dict[int, list[int]] = field(default_factory=dict)  # slot -> [bucket, calls, failed, slow]


class MemoryBreakerStore:
    """Thread-safe; ``flush_s`` as for the Redis store (``None``: no flusher thread, call ``breaker.flush()``)."""

    def __init__(self, *, clock: Clock | None = None, flush_s: float | None = 0.1) -> None:
        from distkit.resilience.circuit import monotonic_clock

        self._clock = clock or monotonic_clock
        self._lock = threading.Lock()
        self._state: dict[str, _Shared] = {}
        self.flush_s = flush_s
        self.flusher = Flusher(flush_s, "memory")

    def attach(self, breaker: Any) -> None:
        self.flusher.attach(breaker)

    def detach(self, breaker: Any) -> None:
        self.flusher.detach(breaker)

    def __enter__(self) -> MemoryBreakerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.flusher.stop()

    # ----------------------------------------------------------- the script logic, in Python

    def _run(self, name: str, cfg: BreakerConfig, body: Any) -> View:
        with self._lock:
            now = self._clock()
            s = self._state.setdefault(name, _Shared())
            granted = bool(body(s, now))
            remaining = 0
            if s.st == _OPEN:
                remaining = cfg.open_ms if s.forced else max(0, s.since + cfg.open_ms - now)
            calls = failed = slow = 0
            if s.st == _CLOSED:
                calls, failed, slow = self._totals(s, now, cfg)
            return View(CODE_STATE[s.st], s.ep, remaining, s.forced, calls, failed, slow, granted)

    @staticmethod
    def _to(s: _Shared, state: int, now: int) -> None:
        s.st, s.ep, s.since = state, s.ep + 1, now
        s.iss = s.dn = s.pf = s.ps = 0
        s.ring.clear()

    def _tick(self, s: _Shared, now: int, cfg: BreakerConfig) -> None:
        if s.st == _OPEN and not s.forced and now >= s.since + cfg.open_ms:
            self._to(s, _HALF, now)
        elif s.st == _HALF and now - s.since >= cfg.half_open_max_ms:
            self._to(s, _OPEN, now)

    @staticmethod
    def _totals(s: _Shared, now: int, cfg: BreakerConfig) -> tuple[int, int, int]:
        cur = now // cfg.bucket_ms
        a = b = d = 0
        for bucket, c, f, sl in s.ring.values():
            if cur - cfg.buckets < bucket <= cur:
                a, b, d = a + c, b + f, d + sl
        return a, b, d

    def flush(self, name: str, cfg: BreakerConfig, delta: tuple[int, int, int], trip_epoch: int | None) -> View:
        def body(s: _Shared, now: int) -> bool:
            self._tick(s, now, cfg)
            if s.st == _CLOSED and delta[0]:
                cur = now // cfg.bucket_ms
                slot = s.ring.get(cur % cfg.buckets)
                if slot is None or slot[0] != cur:
                    slot = s.ring[cur % cfg.buckets] = [cur, 0, 0, 0]
                slot[1] += delta[0]
                slot[2] += delta[1]
                slot[3] += delta[2]
            if trip_epoch is not None and s.st == _CLOSED and (trip_epoch == s.ep or trip_epoch < 0):
                self._to(s, _OPEN, now)
            elif s.st == _CLOSED:
                calls, failed, slow = self._totals(s, now, cfg)
                if calls >= cfg.minimum_calls and cfg.tripped(calls, failed, slow):
                    self._to(s, _OPEN, now)
            return False

        return self._run(name, cfg, body)

    def acquire_probe(self, name: str, cfg: BreakerConfig) -> View:
        def body(s: _Shared, now: int) -> bool:
            self._tick(s, now, cfg)
            if s.st == _HALF and s.iss < cfg.half_open_calls:
                s.iss += 1
                return True
            return False

        return self._run(name, cfg, body)

    def record_probe(self, name: str, cfg: BreakerConfig, epoch: int, failed: bool, slow: bool) -> View:
        def body(s: _Shared, now: int) -> bool:
            self._tick(s, now, cfg)
            if s.st == _HALF and s.ep == epoch:
                s.dn, s.pf, s.ps = s.dn + 1, s.pf + failed, s.ps + slow
                if s.dn >= cfg.half_open_calls:
                    self._to(s, _OPEN if cfg.tripped(s.dn, s.pf, s.ps) else _CLOSED, now)
            return False

        return self._run(name, cfg, body)

    def release_probe(self, name: str, cfg: BreakerConfig, epoch: int) -> View:
        def body(s: _Shared, now: int) -> bool:
            self._tick(s, now, cfg)
            if s.st == _HALF and s.ep == epoch and s.iss > s.dn:
                s.iss -= 1
            return False

        return self._run(name, cfg, body)

    def control(self, name: str, cfg: BreakerConfig, op: str) -> View:
        def body(s: _Shared, now: int) -> bool:
            if op == "force_open":
                s.forced = True
                if s.st != _OPEN:
                    self._to(s, _OPEN, now)
            else:
                s.forced = False
                self._to(s, _CLOSED, now)
            return False

        return self._run(name, cfg, body)
