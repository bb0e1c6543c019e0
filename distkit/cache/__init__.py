"""Hot-key-proof two-level cache: in-process L1 + Redis L2, one reload per expiry across processes, XFetch early
refresh, fail-safe stale serving with soft/hard load timeouts, null caching, jittered TTLs and a pub/sub backplane.

>>> from distkit.cache import HotKeyCache                                    # doctest: +SKIP
>>> cache = HotKeyCache(redis_client, namespace="hy", loader=load_from_db)   # doctest: +SKIP
>>> cache.get("config:rates")                                                # doctest: +SKIP

See docs/cache.md.
"""

from distkit.cache.aio import AsyncHotKeyCache
from distkit.cache.entry import Codec, Entry, JsonCodec
from distkit.cache.hotkey import HotKeyCache, Stats

__all__ = ["AsyncHotKeyCache", "Codec", "Entry", "HotKeyCache", "JsonCodec", "Stats"]
