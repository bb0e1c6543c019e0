"""How a service reads its configuration: one :class:`HotKeyCache` per process over Redis, the SQL table as its
loader, and :class:`distkit.locks.Locks` for the read-write lock (renewed by the locks' watchdog while held)."""

from __future__ import annotations

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


def config_cache(wiring: Wiring, store: ConfigStore, *, rw_lock: bool = True) -> tuple[HotKeyCache, Locks]:
    """The cache a service (or the admin tool) uses. ``locks=``: reloads hold the key's read lock, writers its
    write lock, in every process (``rw_lock=False`` shows what goes wrong without). A long TTL: the configuration
    changes when the admin saves, not by expiry."""
    locks = Locks(wiring.redis, namespace=wiring.namespace)
    counter = loads_key(wiring)

    def load(key: str) -> dict[str, Any]:
        pipe = wiring.redis.pipeline(transaction=False)
        pipe.incr(counter)
        pipe.expire(counter, 3600)
        pipe.execute()
        return store.read()

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
