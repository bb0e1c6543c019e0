"""Redisson-style distributed locks on Redis (and Redis Cluster), sync and asyncio.

* :meth:`Locks.lock` - reentrant exclusive lock with a watchdog-renewed (or fixed) lease and fencing tokens.
* :meth:`Locks.fair_lock` - the same, granted in FIFO order; dead waiters lose their place.
* :meth:`Locks.rw_lock` - many readers or one writer, downgrade allowed, upgrade refused, optional
  writer preference.
* :meth:`Locks.semaphore` - expirable permits (several per id if asked), ``drain`` / ``add_permits``.
* :meth:`Locks.multi_lock` - all-or-nothing over several locks, taken in one global order.

Waiters sleep on one shared pub/sub listener (no polling), the watchdog stops renewing when the owner thread
or task dies, every Redis call has a deadline, and every key carries a TTL. See docs/locks.md.

>>> from distkit.locks import Locks                                   # doctest: +SKIP
>>> locks = Locks(redis_client, namespace="app")                       # doctest: +SKIP
>>> with locks.lock("order:42") as lock:                               # doctest: +SKIP
...     db.update(order, fencing_token=lock.fencing_token)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distkit._lazy import lazy_getattr

if TYPE_CHECKING:
    from distkit.locks.aio import AsyncLock, AsyncLocks, AsyncSemaphore
    from distkit.locks.base import ReadWriteLock
    from distkit.locks.lock import Lock, Locks
    from distkit.locks.multi import AsyncMultiLock, MultiLock
    from distkit.locks.semaphore import Semaphore

__all__ = [
    "AsyncLock",
    "AsyncLocks",
    "AsyncMultiLock",
    "AsyncSemaphore",
    "Lock",
    "Locks",
    "MultiLock",
    "ReadWriteLock",
    "Semaphore",
]

# every lock talks to Redis: the names load on first use, so ``import distkit.locks`` works without the redis
# extra and ``from distkit.locks import Locks`` then says ``pip install 'distkit[redis]'``
_LAZY = {
    "AsyncLock": "distkit.locks.aio",
    "AsyncLocks": "distkit.locks.aio",
    "AsyncMultiLock": "distkit.locks.multi",
    "AsyncSemaphore": "distkit.locks.aio",
    "Lock": "distkit.locks.lock",
    "Locks": "distkit.locks.lock",
    "MultiLock": "distkit.locks.multi",
    "ReadWriteLock": "distkit.locks.base",
    "Semaphore": "distkit.locks.semaphore",
}
__getattr__ = lazy_getattr(__name__, _LAZY)
