"""A service registry on Redis: instances register, heartbeat every ``ttl_s / 3`` and vanish ``ttl_s`` after
their heartbeats stop (a SIGKILLed process included). Nacos / Eureka semantics, on one Redis.

Per service, one hash slot (``{ns:service}``): a sorted set of instance ids scored by expiry (Redis ``TIME``,
so hosts' clocks don't matter), a hash of their JSON, and a pub/sub channel of up/down events. Every key has
a TTL (three heartbeats' worth). :meth:`ServiceRegistry.watch` combines the events with a periodic re-read, so
a silent expiry is noticed too.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distkit._redis import Runner, Script, key
from distkit.errors import BackendUnavailableError, InvalidArgumentError

if TYPE_CHECKING:
    from distkit._types import SyncRedisLike

log = logging.getLogger("distkit.gateway")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_HEARTBEAT = Script("gateway", "heartbeat")
_DEREGISTER = Script("gateway", "deregister")
_INSTANCES = Script("gateway", "instances")


@dataclass(frozen=True)
class ServiceInstance:
    service: str
    host: str
    port: int
    weight: int = 1
    metadata: Mapping[str, Any] = field(default_factory=dict)
    instance_id: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.service, str) or not _NAME.match(self.service):
            raise InvalidArgumentError(f"service names are 1-100 of [A-Za-z0-9._-], got {self.service!r}")
        if not isinstance(self.host, str) or not self.host or len(self.host) > 255:
            raise InvalidArgumentError(f"host must be a non-empty string, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise InvalidArgumentError(f"port must be 1-65535, got {self.port!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int) or self.weight < 0:
            raise InvalidArgumentError(f"weight must be an int >= 0, got {self.weight!r}")
        if not self.instance_id:
            object.__setattr__(self, "instance_id", f"{self.host}:{self.port}")

    @property
    def url(self) -> str:
        scheme = self.metadata.get("scheme", "http")
        return f"{scheme}://{self.host}:{self.port}"

    def to_json(self) -> str:
        return json.dumps({"service": self.service, "host": self.host, "port": self.port, "weight": self.weight,
                           "metadata": dict(self.metadata), "instance_id": self.instance_id}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> ServiceInstance:
        d = json.loads(text)
        return cls(d["service"], d["host"], int(d["port"]), int(d.get("weight", 1)), d.get("metadata") or {},
                   d.get("instance_id", ""))


class Registration:
    """One registered instance; heartbeats in a daemon thread until :meth:`deregister`."""

    def __init__(self, registry: ServiceRegistry, instance: ServiceInstance) -> None:
        self.registry = registry
        self.instance = instance
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"distkit-registry-{instance.service}-{instance.instance_id}", daemon=True
        )
        self._thread.start()

    def _beat(self) -> None:
        interval = self.registry.ttl_s / 3
        while not self._stop.wait(interval):
            try:
                self.registry._heartbeat(self.instance)
            except Exception as exc:  # keep trying: the instance expires on its own if Redis stays away
                log.warning("heartbeat of %s/%s failed: %s", self.instance.service, self.instance.instance_id, exc)

    def deregister(self) -> None:
        """Stop heartbeating and remove the instance now (``instances()`` no longer lists it)."""
        self._stop.set()
        self._thread.join(5)
        self.registry._deregister(self.instance)

    def __enter__(self) -> Registration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.deregister()


class Watch:
    """Calls ``callback(instances)`` with the live list whenever it changes (and once at start)."""

    def __init__(self, registry: ServiceRegistry, service: str, callback: Callable[[list[ServiceInstance]], Any],
                 interval_s: float) -> None:
        self._registry = registry
        self._service = service
        self._callback = callback
        self._interval = interval_s
        self._stop = threading.Event()
        self._last: list[str] | None = None
        self.instances: list[ServiceInstance] = []
        self._pubsub: Any = None
        self._thread = threading.Thread(target=self._run, name=f"distkit-registry-watch-{service}", daemon=True)
        self._subscribe()
        self._refresh()
        self._thread.start()

    def _subscribe(self) -> None:
        try:
            ps = self._registry.client.pubsub(ignore_subscribe_messages=True)
            ps.subscribe(self._registry._channel(self._service))
            self._pubsub = ps
        except Exception as exc:  # events are a speed-up; the periodic re-read is the guarantee
            log.warning("registry watch of %s: no pub/sub (%s); polling every %.1f s", self._service, exc,
                        self._interval)
            self._pubsub = None

    def _refresh(self) -> None:
        try:
            live = self._registry.instances(self._service)
        except BackendUnavailableError as exc:
            log.warning("registry watch of %s: %s; keeping the last list", self._service, exc)
            return
        ids = [i.to_json() for i in live]
        if ids != self._last:
            self._last = ids
            self.instances = live
            try:
                self._callback(live)
            except Exception:
                log.exception("registry watch callback for %s failed", self._service)

    def _run(self) -> None:
        """One thread reads the event channel and re-reads the list every ``interval_s``; it alone touches the
        pub/sub connection, and closes it when stopped."""
        next_read = time.monotonic() + self._interval
        try:
            while not self._stop.is_set():
                event = False
                if self._pubsub is not None:
                    try:
                        event = self._pubsub.get_message(timeout=min(0.2, self._interval)) is not None
                    except Exception as exc:
                        log.warning("registry watch of %s: pub/sub lost (%s); polling", self._service, exc)
                        self._pubsub = None
                else:
                    self._stop.wait(min(0.2, self._interval))
                if event or time.monotonic() >= next_read:
                    self._refresh()
                    next_read = time.monotonic() + self._interval
        finally:
            if self._pubsub is not None:
                self._pubsub.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class ServiceRegistry:
    """Instances of services in Redis, under ``namespace``. ``ttl_s``: how long an instance stays listed after
    its last heartbeat (heartbeats every ``ttl_s / 3``)."""

    def __init__(self, redis_client: SyncRedisLike, *, namespace: str = "svc", ttl_s: float = 10.0,
                 timeout_s: float = 2.0) -> None:
        if not isinstance(ttl_s, int | float) or isinstance(ttl_s, bool) or not ttl_s > 0:
            raise InvalidArgumentError(f"ttl_s must be > 0, got {ttl_s!r}")
        if not isinstance(namespace, str) or not _NAME.match(namespace):
            raise InvalidArgumentError(f"namespace must be 1-100 of [A-Za-z0-9._-], got {namespace!r}")
        self.client = redis_client
        self.namespace = namespace
        self.ttl_s = float(ttl_s)
        self._run = Runner(redis_client, timeout_s=timeout_s)

    def __repr__(self) -> str:
        return f"ServiceRegistry(namespace={self.namespace!r}, ttl_s={self.ttl_s})"

    def _keys(self, service: str) -> list[str]:
        return [key(self.namespace, service, "members"), key(self.namespace, service, "data")]

    def _channel(self, service: str) -> str:
        return key(self.namespace, service, "events")

    def _call(self, script: Script, service: str, args: list[Any]) -> Any:
        try:
            return self._run(script, self._keys(service), args, deadline=time.monotonic() + self._run.timeout_s)
        except BackendUnavailableError:
            raise
        except (OSError, ConnectionError, TimeoutError) as exc:  # pragma: no cover - older Runner contract
            raise BackendUnavailableError(f"registry Redis unreachable: {exc}") from exc
        except Exception as exc:
            import redis

            if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
                raise BackendUnavailableError(f"registry Redis unreachable: {type(exc).__name__}") from exc
            raise

    def _heartbeat(self, instance: ServiceInstance) -> bool:
        ttl_ms = int(self.ttl_s * 1000)
        return bool(self._call(_HEARTBEAT, instance.service,
                               [instance.instance_id, instance.to_json(), ttl_ms, self._channel(instance.service)]))

    def _deregister(self, instance: ServiceInstance) -> None:
        self._call(_DEREGISTER, instance.service, [instance.instance_id, self._channel(instance.service)])

    def register(self, instance: ServiceInstance) -> Registration:
        """List ``instance`` now (raises if Redis is unreachable) and keep it listed until deregistered."""
        self._heartbeat(instance)
        return Registration(self, instance)

    def instances(self, service: str) -> list[ServiceInstance]:
        """The live instances of ``service``, by instance id."""
        if not _NAME.match(service):
            raise InvalidArgumentError(f"service names are 1-100 of [A-Za-z0-9._-], got {service!r}")
        rows = self._call(_INSTANCES, service, [self._channel(service)])
        out = [ServiceInstance.from_json(r) for r in rows if r is not None]
        return sorted(out, key=lambda i: i.instance_id)

    def watch(self, service: str, callback: Callable[[list[ServiceInstance]], Any], *,
              interval_s: float | None = None) -> Watch:
        """Call ``callback(instances)`` now and on every change (pub/sub events, plus a re-read every
        ``interval_s``, default ``ttl_s / 3``, which also catches silent expiries). ``.stop()`` ends it."""
        return Watch(self, service, callback, interval_s or self.ttl_s / 3)

    def close(self) -> None:
        self._run.close()
