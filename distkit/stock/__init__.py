"""Oversell-proof stock deduction, three strategies behind one :class:`Stock` protocol (see docs/stock.md):

* :class:`LockedDbStock` — (a) a distributed lock + a conditional SQL ``UPDATE``;
* :class:`RedisStock` — (b) a Redis Lua check-and-decrement + asynchronous DB deduction through a broker;
* :class:`TokenPoolStock` — (c) one token per unit in a Redis SET, ``SPOP`` per buyer, then the broker.
"""

from typing import TYPE_CHECKING

from distkit._lazy import lazy_getattr
from distkit.stock.protocol import Stock

if TYPE_CHECKING:
    from distkit.stock.db import LockedDbStock, SqlStockTable
    from distkit.stock.redis import RedisStock, TokenPoolStock

__getattr__ = lazy_getattr(__name__, {
    "RedisStock": "distkit.stock.redis", "TokenPoolStock": "distkit.stock.redis",
    "LockedDbStock": "distkit.stock.db", "SqlStockTable": "distkit.stock.db",
})

__all__ = ["LockedDbStock", "RedisStock", "SqlStockTable", "Stock", "TokenPoolStock"]
