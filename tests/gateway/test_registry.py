"""The registry on the real Redis: processes register, a SIGKILLed one vanishes within ttl + 1 s, watches fire,
deregistration is immediate, every key has a TTL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from distkit.errors import InvalidArgumentError
from distkit.gateway import ServiceInstance, ServiceRegistry

ROOT = Path(__file__).resolve().parents[2]


def start_backend(redis_url: str, namespace: str, name: str, flag: str | None = None) -> tuple[Any, int]:
    args = [sys.executable, "-m", "tests.gateway._backend", redis_url, namespace, "order", name]
    if flag:
        args.append(flag)
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ}, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


def test_three_processes_register_and_a_sigkilled_one_vanishes_in_ttl(redis_client: Any, redis_url: str,
                                                                     namespace: str) -> None:
    registry = ServiceRegistry(redis_client, namespace=namespace, ttl_s=2)
    events: list[list[str]] = []
    changed = threading.Event()

    def on_change(instances: list[ServiceInstance]) -> None:
        events.append([i.metadata["name"] for i in instances])
        changed.set()

    watch = registry.watch("order", on_change, interval_s=0.5)
    procs = [start_backend(redis_url, namespace, f"b{i}") for i in range(3)]
    try:
        assert sorted(i.metadata["name"] for i in registry.instances("order")) == ["b0", "b1", "b2"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sorted(events[-1] if events else []) != ["b0", "b1", "b2"]:
            changed.wait(0.2)
            changed.clear()
        assert sorted(events[-1]) == ["b0", "b1", "b2"]
        victim, _ = procs[1]
        victim.kill()
        victim.wait()
        killed_at = time.monotonic()
        while "b1" in [i.metadata["name"] for i in registry.instances("order")]:
            time.sleep(0.05)
            assert time.monotonic() - killed_at < registry.ttl_s + 1.0, "a dead instance stayed listed past ttl + 1 s"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "b1" in events[-1]:
            changed.wait(0.2)
        assert sorted(events[-1]) == ["b0", "b2"]  # the watch saw the silent expiry
        for k in redis_client.scan_iter(match=f"*{namespace}*"):
            assert redis_client.pttl(k) > 0, f"{k!r} has no TTL"
    finally:
        watch.stop()
        for p, _ in procs:
            p.kill()
            p.wait()


def test_deregister_is_immediate_and_heartbeats_keep_an_instance(redis_client: Any, namespace: str) -> None:
    registry = ServiceRegistry(redis_client, namespace=namespace, ttl_s=1)
    reg = registry.register(ServiceInstance("pay", "127.0.0.1", 9001, weight=3, metadata={"zone": "cn-east"}))
    time.sleep(2.5)  # more than two ttls: only the heartbeats keep it listed
    (inst,) = registry.instances("pay")
    assert inst.weight == 3 and inst.metadata == {"zone": "cn-east"} and inst.instance_id == "127.0.0.1:9001"
    reg.deregister()
    assert registry.instances("pay") == []


def test_bad_input_is_typed(redis_client: Any, namespace: str) -> None:
    registry = ServiceRegistry(redis_client, namespace=namespace)
    for bad in ({"service": "a{b}"}, {"port": 0}, {"port": 70000}, {"host": ""}, {"weight": -1}, {"port": True}):
        kw = {"service": "ok", "host": "h", "port": 1, **bad}
        with pytest.raises(InvalidArgumentError):
            ServiceInstance(**kw)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        registry.instances("no spaces")
    with pytest.raises(InvalidArgumentError):
        ServiceRegistry(redis_client, namespace="a:b")


def test_registry_on_redis_cluster(redis_cluster: Any, namespace: str) -> None:
    registry = ServiceRegistry(redis_cluster, namespace=namespace, ttl_s=5)
    regs = [registry.register(ServiceInstance("order", "127.0.0.1", 7000 + i)) for i in range(3)]
    assert [i.port for i in registry.instances("order")] == [7000, 7001, 7002]
    for r in regs:
        r.deregister()
    assert registry.instances("order") == []


def test_an_abandoned_registration_stays_listed_until_its_ttl_then_expires(redis_client: Any, namespace: str) -> None:
    registry = ServiceRegistry(redis_client, namespace=namespace, ttl_s=1)
    reg = registry.register(ServiceInstance("order", "127.0.0.1", 7100))
    reg.abandon()  # a crash: no more heartbeats, no deregistration
    abandoned_at = time.monotonic()
    assert not reg._thread.is_alive()
    assert [i.port for i in registry.instances("order")] == [7100]  # still listed: nobody said it left
    while registry.instances("order"):
        time.sleep(0.05)
        assert time.monotonic() - abandoned_at < registry.ttl_s + 1.0, "an abandoned instance outlived its ttl"
    assert time.monotonic() - abandoned_at >= registry.ttl_s - 0.4  # last heartbeat at most ttl/3 before abandon
