"""Idempotency stores: Redis (one Lua script per transition) and SQL (unique key + compare-and-set)."""

from distkit.idempotency.stores.base import IdempotencyStore

__all__ = ["IdempotencyStore"]
