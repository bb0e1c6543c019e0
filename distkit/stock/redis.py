"""Stock in Redis: strategy (b) — a Lua check-and-decrement (:class:`RedisStock`) — and strategy (c) — one token
per unit in a SET, ``SPOP`` per buyer (:class:`TokenPoolStock`).

Each deduction is one script that also records the order (so a retry never deducts twice) and appends a
deduction event to a per-SKU Redis stream *in the same atomic step*; :meth:`relay_events` moves those events to
a :mod:`distkit.messaging` producer for the asynchronous database update (at least once, each event carrying
its order id, so the consumer applies it once — :meth:`distkit.stock.SqlStockTable.apply_event`). A crash
between the deduction and the relay loses nothing: the event waits in the stream.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from distkit._redis import Runner, Script, key
from distkit.errors import InvalidArgumentError, StockNotLoadedError
from distkit.stock.protocol import check, count_deduction, count_restore

if TYPE_CHECKING:
    from distkit._types import SyncRedisLike

_DEDUCT = Script("stock", "deduct")
_RESTORE = Script("stock", "restore")
_TAKE = Script("stock", "take_token")
_RETURN = Script("stock", "return_tokens")
_LOAD_TOKENS = Script("stock", "load_tokens")
_LOAD = Script("stock", "load_stock")
_GROUP = "distkit-stock-relay"
_OUTCOMES = {1: "deducted", 2: "repeat", 0: "sold_out", -2: "refused"}  # the scripts' reply codes


def _int(v: Any) -> int:
    return int(v.decode() if isinstance(v, bytes) else v)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class _RedisStockBase:
    def __init__(self, redis_client: SyncRedisLike, *, namespace: str = "stock", ttl_s: float = 7 * 86400,
                 timeout_s: float = 2.0) -> None:
        self.client: Any = redis_client  # typed by the signature; the stream commands below are redis-py's
        self.namespace = namespace
        self.ttl_ms = int(ttl_s * 1000)
        self._run = Runner(redis_client, timeout_s=timeout_s)

    def _keys(self, sku: str, *names: str) -> list[str]:
        return [key(self.namespace, sku, n) for n in names]

    def _deadline(self) -> float:
        return time.monotonic() + self._run.timeout_s

    def relay_events(self, sku: str, producer: Any, topic: str, *, max_events: int = 500,
                     consumer: str = "relay", min_idle_ms: int = 30_000) -> int:
        """Send up to ``max_events`` deduction/restore events of ``sku`` to ``producer`` (a distkit producer) on
        ``topic``, then drop them from the stream. Several relays may run at once (a consumer group splits the
        work); events a dead relay had claimed are taken over after ``min_idle_ms``. Returns how many were sent.
        """
        check(sku)
        (stream,) = self._keys(sku, "events")
        c = self.client
        try:
            c.xgroup_create(stream, _GROUP, id="0", mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        entries: list[tuple[Any, dict[Any, Any]]] = []
        claimed = c.xautoclaim(stream, _GROUP, consumer, min_idle_ms, "0-0", count=max_events)
        entries += [e for e in claimed[1] if e and e[1]]
        if len(entries) < max_events:
            for _stream, items in c.xreadgroup(_GROUP, consumer, {stream: ">"}, count=max_events - len(entries)):
                entries += items
        if not entries:
            return 0
        for entry_id, fields in entries:
            f = {_text(k): _text(v) for k, v in fields.items()}
            event = {"kind": f["kind"], "sku": f["sku"], "order_id": f["order_id"], "qty": int(f["qty"]),
                     "left": int(f["left"]), "event_id": f"{f['sku']}:{_text(entry_id)}"}
            producer.send(topic, event, key=f["sku"], headers={"event-id": event["event_id"]})
        producer.flush(30)  # only acknowledged events leave the stream
        ids = [e[0] for e in entries]
        c.xack(stream, _GROUP, *ids)
        c.xdel(stream, *ids)
        return len(entries)

    def close(self) -> None:
        self._run.close()


class RedisStock(_RedisStockBase):
    """Strategy (b): ``try_deduct`` is one Lua check-and-decrement (never below zero, idempotent per order)."""

    def load(self, sku: str, qty: int) -> None:
        """Start selling ``qty`` units of ``sku`` (forgets earlier orders of that SKU)."""
        check(sku)
        if isinstance(qty, bool) or not isinstance(qty, int) or not 0 <= qty <= 10**12:
            raise InvalidArgumentError(f"qty must be an int from 0 to 10**12, got {qty!r}")
        self._script(_LOAD, sku, [qty, self.ttl_ms])

    def _script(self, script: Script, sku: str, args: list[Any]) -> Any:
        return self._run(script, self._keys(sku, "stock", "orders", "events"), args, deadline=self._deadline())

    def try_deduct(self, sku: str, qty: int = 1, *, order_id: str) -> bool:
        check(sku, qty, order_id)
        code, _left = self._script(_DEDUCT, sku, [qty, order_id, sku, self.ttl_ms])
        code = int(code)
        if code == -1:
            raise StockNotLoadedError(f"no stock loaded for {sku!r}: call load() first")
        count_deduction("redis", _OUTCOMES.get(code, "refused"))
        return code in (1, 2)

    def restore(self, sku: str, order_id: str) -> int:
        check(sku, None, order_id)
        qty, _left = self._script(_RESTORE, sku, [order_id, sku, self.ttl_ms])
        if int(qty) == -1:
            raise StockNotLoadedError(f"no stock loaded for {sku!r}")
        count_restore("redis", int(qty))
        return int(qty)

    def available(self, sku: str) -> int:
        check(sku)
        (stock,) = self._keys(sku, "stock")
        v = self.client.get(stock)
        if v is None:
            raise StockNotLoadedError(f"no stock loaded for {sku!r}")
        return _int(v)


class TokenPoolStock(_RedisStockBase):
    """Strategy (c): one token per unit pre-loaded into a Redis SET; a buyer ``SPOP``\\ s one (or ``qty``).
    Load before the sale opens: tokens are added 10,000 per script call."""

    def load(self, sku: str, qty: int) -> None:
        check(sku)
        if isinstance(qty, bool) or not isinstance(qty, int) or not 0 <= qty <= 10_000_000:
            raise InvalidArgumentError(f"qty must be an int from 0 to 10,000,000 tokens, got {qty!r}")
        keys = self._keys(sku, "pool", "owners", "events")
        first = 1
        while True:  # 10,000 tokens per script call, so loading a big sale never stalls Redis
            last = min(first + 9_999, qty)
            self._run(_LOAD_TOKENS, keys, [sku, first, last, self.ttl_ms, "1" if first == 1 else "0"],
                      deadline=self._deadline())
            if last >= qty:
                return
            first = last + 1

    def take(self, sku: str, order_id: str, qty: int = 1) -> str | None:
        """The token(s) this order holds (comma-separated), or ``None`` when sold out / the order was restored."""
        check(sku, qty, order_id)
        code, toks = self._run(_TAKE, self._keys(sku, "pool", "owners", "events"),
                               [qty, order_id, sku, self.ttl_ms], deadline=self._deadline())
        if int(code) == -1:
            raise StockNotLoadedError(f"no token pool loaded for {sku!r}: call load() first")
        count_deduction("token_pool", _OUTCOMES.get(int(code), "refused"))
        return _text(toks) if int(code) in (1, 2) else None

    def try_deduct(self, sku: str, qty: int = 1, *, order_id: str) -> bool:
        return self.take(sku, order_id, qty) is not None

    def restore(self, sku: str, order_id: str) -> int:
        check(sku, None, order_id)
        qty = int(self._run(_RETURN, self._keys(sku, "pool", "owners", "events"), [order_id, sku, self.ttl_ms],
                            deadline=self._deadline()))
        count_restore("token_pool", qty)
        return qty

    def available(self, sku: str) -> int:
        check(sku)
        pool, owners = self._keys(sku, "pool", "owners")
        pipe = self.client.pipeline(transaction=False)
        pipe.scard(pool)
        pipe.exists(owners)
        n, loaded = pipe.execute()
        if not loaded:
            raise StockNotLoadedError(f"no token pool loaded for {sku!r}")
        return int(n)
