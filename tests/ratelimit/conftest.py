"""Shared rate-limit fixtures: one behaviour suite over every backend kind."""

from __future__ import annotations

import pytest

from distkit.ratelimit import MemoryBackend, RedisBackend


@pytest.fixture(params=["memory", "redis", "redis-client-path", "cluster"])
def backend_for(request, namespace):
    """``backend_for(clock)`` → a backend of the parametrised kind driven by ``clock``. "redis" goes through the
    direct lane, "redis-client-path" through redis-py's own command path (``direct=False``)."""

    def make(clock):
        if request.param == "memory":
            return MemoryBackend(clock=clock)
        client = request.getfixturevalue("redis_cluster" if request.param == "cluster" else "redis_client")
        return RedisBackend(client, prefix=namespace, clock=clock, direct=request.param == "redis")

    return make
