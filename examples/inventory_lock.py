"""Reference app: an inventory service that reserves stock under distkit.locks (runs on fakeredis, no servers).

* 8 worker threads reserve units of one SKU; each read-modify-write of the stock runs under ``locks.lock``
  and the write carries the lock's fencing token, so the "database" can refuse a stale holder.
* A worker that stalls past its lease (a GC pause, a frozen VM) comes back and tries to write: the database
  has seen a newer token and rejects it (Kleppmann's argument for fencing).
* The catalog is read under a read-write lock's read side; a price update takes the write side.
* A semaphore caps concurrent calls to the payment provider at 2.

Point it at a real server by swapping the fakeredis client for ``Settings.from_env().redis()``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import fakeredis

from distkit.errors import LockLostError
from distkit.locks import Locks


@dataclass
class Inventory:
    """A stand-in for a database table that remembers the highest fencing token it has accepted per row."""

    stock: dict[str, int] = field(default_factory=lambda: {"sku-1": 100})
    last_token: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    _mutex: threading.Lock = field(default_factory=threading.Lock)

    def write(self, sku: str, units: int, token: int) -> bool:
        """``UPDATE stock SET units = :units, token = :token WHERE sku = :sku AND token < :token``."""
        with self._mutex:
            if token <= self.last_token.get(sku, 0):
                self.rejected += 1
                return False
            self.stock[sku], self.last_token[sku] = units, token
            return True


def reserve(locks: Locks, db: Inventory, sku: str, units: int) -> None:
    with locks.lock(f"stock:{sku}") as lock:
        available = db.stock[sku]
        time.sleep(0.001)  # the read-modify-write a lock exists for
        if available >= units:
            db.write(sku, available - units, lock.fencing_token)


def stalled_worker(locks: Locks, db: Inventory, sku: str) -> str:
    """Takes the lock with a short lease, stalls past it, then tries to write."""
    lock = locks.lock(f"stock:{sku}")
    lock.acquire(lease_ms=50)
    token, stale_units = lock.fencing_token, db.stock[sku]
    time.sleep(0.2)  # the pause: the lease expires, another worker takes the lock and writes
    accepted = db.write(sku, stale_units - 1, token)
    try:
        lock.release()
        lost = "no"
    except LockLostError:
        lost = "yes (release raised LockLostError)"
    return f"stale write accepted: {accepted}; lock lost: {lost}"


def main() -> None:
    client = fakeredis.FakeRedis()
    db = Inventory()
    with Locks(client, namespace="shop", lease_ms=2_000) as locks:
        workers = [threading.Thread(target=reserve, args=(locks, db, "sku-1", 3)) for _ in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        print(f"8 workers reserved 3 units each under one lock: stock 100 -> {db.stock['sku-1']} (expected 76)")

        # the stalled worker: while it sleeps, a healthy worker reserves with a newer token
        result: list[str] = []
        stalled = threading.Thread(target=lambda: result.append(stalled_worker(locks, db, "sku-1")))
        stalled.start()
        time.sleep(0.1)
        reserve(locks, db, "sku-1", 1)
        stalled.join()
        print(
            f"a worker stalled past its 50 ms lease -> {result[0]}; stock {db.stock['sku-1']}, "
            f"fenced writes rejected: {db.rejected}"
        )

        catalog = locks.rw_lock("catalog", prefer_writers=True)
        with catalog.read_lock(), catalog.read_lock():
            print("catalog read twice under the (reentrant) read lock")
        with catalog.write_lock(), catalog.read_lock():
            print("price update under the write lock, then downgraded to read")

        payments = locks.semaphore("payment-provider", permits=2, lease_ms=5_000)
        first, second = payments.acquire(), payments.acquire()
        print(f"payment permits in use: 2, a third caller gets one: {payments.acquire(blocking=False) is not None}")
        for permit in (first, second):
            assert permit is not None
            payments.release(permit)
        print(f"keys left in Redis after everything: {len(client.keys('*'))}")


if __name__ == "__main__":
    main()
