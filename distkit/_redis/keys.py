"""Cluster-safe key names.

Every logical object (a lock, a limiter key, an idempotency record) gets one hash tag, so the object and
its companions (``:owners``, ``:queue``, ``:fence`` ...) land in one slot and a single Lua script may touch
all of them on Redis Cluster without CROSSSLOT errors.

>>> key("app", "order:42")
'{app:order:42}'
>>> key("app", "order:42", "fence")
'{app:order:42}:fence'
"""

from __future__ import annotations

from distkit.errors import InvalidArgumentError


def key(namespace: str, name: str, suffix: str | None = None) -> str:
    """``{namespace:name}[:suffix]``: the braces make ``namespace:name`` the hash tag."""
    if not namespace or not name:
        raise InvalidArgumentError(f"key needs a namespace and a name, got {namespace!r}, {name!r}")
    base = f"{{{namespace}:{name}}}"
    return f"{base}:{suffix}" if suffix else base


def key_prefix(namespace: str) -> str:
    """The glob pattern that matches every key :func:`key` makes in ``namespace`` (for SCAN / cleanup)."""
    return f"{{{namespace}:*"
