"""The backplane: one Redis pub/sub listener thread per cache object that drops L1 copies other processes changed.

Every ``set`` / ``invalidate`` / finished reload publishes ``<origin>|<key>`` on ``distkit:cache:<namespace>``
(inside the same Lua script that writes, so the message can never precede the write). The listener pops that
key from this process's L1, so the next ``get`` reads the new value from Redis.

A lost connection is expected (failover, ``CLIENT KILL``, idle timeouts). Messages published while the listener
was away are lost, so **every re-subscription clears the whole L1** (redis-py may reconnect and re-subscribe
inside ``get_message``; the extra ``subscribe`` confirmation is how we notice). Between the loss and the
re-subscription an L1 entry is wrong for at most ``local_ttl_s`` (its L1 lifetime), never longer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from distkit.errors import BackendUnavailableError

log = logging.getLogger("distkit.cache")

_OUTAGES = (BackendUnavailableError, RedisConnectionError, RedisTimeoutError, OSError)


class Backplane:
    """Listener thread ``distkit-cache-<namespace>``; ``close()`` stops it within ``poll_s``."""

    def __init__(
        self,
        client: Any,
        channel: str,
        origin: str,
        on_key: Callable[[str], None],
        on_reset: Callable[[], None],
        *,
        name: str,
        poll_s: float = 0.25,
    ) -> None:
        self.client = client
        self.channel = channel
        self.origin = origin
        self._on_key = on_key
        self._on_reset = on_reset
        self._poll_s = poll_s
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.subscriptions = 0  # every subscribe confirmation; > 1 means we re-subscribed
        self.disconnects = 0
        self.messages = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def message(self, key: str) -> str:
        return f"{self.origin}|{key}"

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def _run(self) -> None:
        backoff = 0.02
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self.client.pubsub()
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=self._poll_s)
                    if msg is None:
                        continue
                    backoff = 0.02
                    self._handle(msg)
            except _OUTAGES as exc:
                self.connected.clear()
                self.disconnects += 1
                log.warning("distkit.cache backplane %s lost its connection (%s); L1 entries now live at most "
                            "local_ttl_s; re-subscribing in %.2f s", self.channel, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 1.0)
            except Exception:  # never let the listener die on a surprise: log, back off, re-subscribe
                self.connected.clear()
                log.exception("distkit.cache backplane %s listener error", self.channel)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 1.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass

    def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if isinstance(kind, bytes):
            kind = kind.decode()
        if kind == "subscribe":
            self.subscriptions += 1
            if self.subscriptions > 1:
                self._on_reset()  # we may have missed invalidations while away
            self.connected.set()
            return
        if kind != "message":
            return
        data = msg.get("data")
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        origin, _, key = text.partition("|")
        self.messages += 1
        if origin != self.origin:
            self._on_key(key)

    def stop(self) -> None:
        """Ask the listener to exit (it does within ``poll_s``) without waiting for it."""
        self._stop.set()

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
