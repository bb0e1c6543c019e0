"""Decisions are counted through the OpenTelemetry API, including which failure policy answered."""

from __future__ import annotations

import redis
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from distkit.ratelimit import FailurePolicy, FixedWindow, Rate, RedisBackend


def test_decisions_counter_with_policy_attribute(private_redis):
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    client = redis.Redis.from_url(private_redis.url, socket_timeout=0.5)
    lim = FixedWindow(
        Rate(1, per_s=60),
        backend=RedisBackend(client, prefix="m"),
        name="login",
        on_backend_error=FailurePolicy.FAIL_OPEN,
    )
    lim.acquire("u")
    lim.acquire("u")
    private_redis.stop()
    lim.acquire("u")
    points = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == "distkit.ratelimit.decisions":
                    for p in m.data.data_points:
                        a = p.attributes
                        if a["limiter"] == "login":
                            points[(a["allowed"], a["policy"])] = p.value
    assert points == {(True, "backend"): 1, (False, "backend"): 1, (True, "fail_open"): 1}
