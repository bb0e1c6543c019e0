"""How a service reads its configuration: one :class:`HotKeyCache` per process over Redis, the SQL table as its
loader, and :class:`distkit.locks.Locks` for the read-write lock (renewed by the locks' watchdog while held)."""

from __future__ import annotations

import time
from typing import Any

from distkit.cache import HotKeyCache
from distkit.locks import Locks
from examples._wiring import Wiring
from examples.hot_config_cache.store import ConfigStore

CONFIG_KEY = "config"
LOCAL_TTL_S = 2.0  # how long an L1 copy may live if a backplane message is lost: the staleness bound


def loads_key(wiring: Wiring) -> str:
    """A Redis counter of loader calls in every process, so the test can count reloads exactly."""
    return f"{wiring.namespace}:config-loads"


def reload_lock_key(wiring: Wiring) -> str:
    """The cache's reload lock of the configuration (``{namespace:key}:reload``, docs/cache.md): held from the
    moment a reload starts (also while it waits for the read lock, before the loader runs) until it is written."""
    return f"{{{wiring.namespace}:{CONFIG_KEY}}}:reload"


def config_cache(wiring: Wiring, store: ConfigStore, *, rw_lock: bool = True) -> tuple[HotKeyCache, Locks]:
    """The cache a service (or the admin tool) uses. ``locks=``: reloads hold the key's read lock, writers its
    write lock, in every process (``rw_lock=False`` shows what goes wrong without). A long TTL: the configuration
    changes when the admin saves, not by expiry."""
    locks = Locks(wiring.redis, namespace=wiring.namespace)
    counter = loads_key(wiring)

    def load(key: str) -> dict[str, Any]:
        pipe = wiring.redis.pipeline(transaction=False)
        for name in (counter, f"{counter}:running"):
            pipe.incr(name)
            pipe.expire(name, 3600)
        pipe.execute()
        try:
            return store.read()
        finally:
            wiring.redis.decr(f"{counter}:running")

    cache = HotKeyCache(wiring.redis, namespace=wiring.namespace, loader=load, ttl_s=300, jitter=0.1,
                        local_ttl_s=LOCAL_TTL_S, early_refresh=True, load_timeout_s=(0.1, 5.0),
                        locks=locks if rw_lock else None)
    return cache, locks


def publish(admin: HotKeyCache, store: ConfigStore, version: int, pause_s: float = 0.005) -> None:
    """The admin's save. Every cached copy is dropped *first*, under the write lock: the readers' one reload starts
    at once and waits on the read lock until the last setting is committed, so it can only read a whole version
    (and no second invalidation is needed, which would cost a second reload)."""
    with admin.write_lock(CONFIG_KEY):
        admin.invalidate(CONFIG_KEY)
        store.save(version, pause_s)


def loads(wiring: Wiring) -> int:
    return int(wiring.redis.get(loads_key(wiring)) or 0)


def settled_loads(wiring: Wiring, timeout_s: float = 5.0) -> int | None:
    """The loader calls so far, counted once no reload is in flight in any process (nobody holds the reload lock,
    no loader call is running), so a reload still finishing in the background is counted too. ``None``: reloads
    were still in flight after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while wiring.redis.exists(reload_lock_key(wiring)) or int(wiring.redis.get(f"{loads_key(wiring)}:running") or 0):
        if time.monotonic() > deadline:
            return None
        time.sleep(0.002)
    return loads(wiring)
