"""Mails to the user, each exactly once: "UI ready", "MD ready", "all ready" and "failed".

Every mail goes through one :func:`~distkit.idempotency.idempotent` function keyed by what the mail announces
(``<request>:ui``, ``<request>:all-ready`` ...): a redelivered event, a retried handler or two consumers
racing all reach the same key, the store's atomic claim (a Redis script) lets exactly one of them send, and
the others wait for its result. Which systems are done is a Redis set updated in a MULTI block, so the
consumer that completes the pair always sees it complete; when both race, both may see it, and the claim
keeps the "all ready" mail single.
"""

from __future__ import annotations

import threading
from typing import Any

from distkit.idempotency import RedisIdempotencyStore, idempotent
from examples.scenario_flow.mail import Mailer


class Notifier:
    """Sends the flow's mails through ``mailer`` and remembers which ones it sent (``sent``: their keys)."""

    def __init__(self, redis: Any, mailer: Mailer, namespace: str, systems: tuple[str, ...]) -> None:
        self.redis = redis
        self.mailer = mailer
        self.systems = systems
        self.sent: list[str] = []
        self._ready = f"{namespace}:ready"
        self._lock = threading.Lock()
        self._store = RedisIdempotencyStore(redis, prefix=f"{namespace}:mail")
        self._mail = idempotent(self._store, key="key", wait_s=10, in_progress_ttl_s=30)(self._send)

    def _send(self, key: str, to: str, subject: str) -> str:
        self.mailer.send(to, subject, f"{subject}\n\n-- the scenario flow ({key})")
        with self._lock:
            self.sent.append(key)
        return key

    def system_done(self, request_id: str, system: str, to: str) -> None:
        """``system`` has the result: mail that once, then the "all ready" mail if it was the last one."""
        self._mail(f"{request_id}:{system}", to, f"[{request_id}] {system.upper()}: your request is ready")
        if self._mark_done(request_id, system) == len(self.systems):
            self._mail(f"{request_id}:all-ready", to, f"[{request_id}] all systems are ready")

    def failed(self, request_id: str, to: str) -> None:
        self._mail(f"{request_id}:failed", to, f"[{request_id}] your request failed (no result in time)")

    def _mark_done(self, request_id: str, system: str) -> int:
        key = f"{self._ready}:{{{request_id}}}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(key, system)
        pipe.scard(key)
        pipe.expire(key, 86_400)
        return int(pipe.execute()[1])

    def count(self, request_id: str) -> dict[str, int]:
        """How many mails of each kind this process sent for ``request_id``."""
        with self._lock:
            kinds = [k.rsplit(":", 1)[1] for k in self.sent if k.rsplit(":", 1)[0] == request_id]
        return {kind: kinds.count(kind) for kind in (*self.systems, "all-ready", "failed")}

    def close(self) -> None:
        self._store.close()
