"""Fixtures of the cache tests: a factory of HotKeyCache objects that are closed after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from distkit.cache import HotKeyCache


@pytest.fixture
def make_cache(redis_client: Any, namespace: str) -> Iterator[Callable[..., HotKeyCache]]:
    made: list[HotKeyCache] = []

    def make(client: Any = None, **kwargs: Any) -> HotKeyCache:
        kwargs.setdefault("namespace", namespace)
        cache = HotKeyCache(client if client is not None else redis_client, **kwargs)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()
