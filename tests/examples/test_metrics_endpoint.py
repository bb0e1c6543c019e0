"""The reference apps' Prometheus endpoint (examples/_metrics.py), scraped over HTTP while they run, and the
Grafana dashboard / docs/metrics.md covering every metric distkit declares."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from examples import _metrics as endpoint_mod
from examples._wiring import Wiring

ROOT = Path(__file__).resolve().parents[2]

# the metric families each reference app must produce (OpenTelemetry names; at least these)
_REDIS = "distkit.redis.call.duration"
EXPECTED: dict[str, set[str]] = {
    "scenario_flow": {"distkit.saga.transitions", "distkit.saga.compensations", "distkit.idempotency.misses",
                      "distkit.idempotency.hits", "distkit.idgen.ids", _REDIS},
    "order_flow": {"distkit.saga.transitions", "distkit.saga.compensations", "distkit.idgen.ids", _REDIS},
    "flash_sale": {"distkit.stock.deductions", "distkit.ratelimit.decisions", "distkit.locks.acquisitions",
                   "distkit.locks.wait.duration", _REDIS},
    "hot_config_cache": {"distkit.cache.requests", "distkit.cache.loads", "distkit.locks.acquisitions", _REDIS},
    "gateway": {"distkit.gateway.requests", "distkit.gateway.request.duration", "distkit.gateway.upstream.errors",
                "distkit.ratelimit.decisions", "distkit.resilience.transitions", "distkit.resilience.fallbacks",
                _REDIS},
    "config_upload": {"distkit.idgen.ids", "distkit.idempotency.misses", "distkit.idempotency.hits", _REDIS},
}
SECONDS = {"distkit.locks.wait.duration", "distkit.gateway.request.duration", "distkit.redis.call.duration"}

# every module that declares instruments, imported in a fresh interpreter to list them
MODULES = [
    "distkit.locks.flows", "distkit.locks.holds", "distkit.idempotency.decorator", "distkit.idempotency.inbox",
    "distkit.messaging.processor", "distkit.messaging.outbox", "distkit.saga.coordinator", "distkit.stock.protocol",
    "distkit.gateway.app", "distkit.idgen.generator", "distkit.ratelimit.metrics", "distkit.resilience.metrics",
    "distkit.cache.hotkey", "distkit._redis.telemetry",
]


def family(otel_name: str) -> str:
    """The Prometheus family name of an OpenTelemetry metric (as prometheus_client's parser reports it)."""
    return otel_name.replace(".", "_") + ("_seconds" if otel_name in SECONDS else "")


def scrape(url: str) -> dict[str, float]:
    """distkit family -> the sum of its counts (counter totals, histogram counts, gauge values)."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: dict[str, float] = {}
    for f in text_string_to_metric_families(text):
        if f.name.startswith("distkit_"):
            counts = [s.value for s in f.samples if s.name in (f.name, f.name + "_total", f.name + "_count")]
            out[f.name] = float(sum(counts))
    return out


def declared() -> dict[str, str]:
    code = ("import importlib, json, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
            "from distkit import _metrics\nprint(json.dumps({n: i.kind for n, i in _metrics.declared().items()}))")
    out = subprocess.run([sys.executable, "-c", code, *MODULES], capture_output=True, text=True, check=True,
                         cwd=ROOT, timeout=60)
    return dict(json.loads(out.stdout))


def test_port_comes_from_the_flag_or_the_environment() -> None:
    assert endpoint_mod.port_from(["flash_sale"], {}) == (None, ["flash_sale"])
    assert endpoint_mod.port_from(["--metrics-port", "9464", "gateway"], {}) == (9464, ["gateway"])
    assert endpoint_mod.port_from(["--metrics-port=0"], {}) == (0, [])
    assert endpoint_mod.port_from([], {"DISTKIT_METRICS_PORT": "9100"}) == (9100, [])
    with pytest.raises(SystemExit):
        endpoint_mod.port_from(["--metrics-port", "x"], {})


def test_endpoint_serves_distkit_metrics_over_http(redis_client: Any, namespace: str) -> None:
    from distkit.locks import Locks
    from distkit.ratelimit import FixedWindow, Rate, RedisBackend

    with endpoint_mod.serve(0) as ep:
        with Locks(redis_client, namespace=namespace) as locks:
            for _ in range(2):
                with locks.lock("scraped"):
                    pass
        lim = FixedWindow(Rate(5, per_s=1), backend=RedisBackend(redis_client, prefix=namespace), name="scraped")
        assert lim.acquire("u").allowed
        with urllib.request.urlopen(ep.url, timeout=5) as resp:
            text = resp.read().decode()
        seen = {f.name for f in text_string_to_metric_families(text)}
    assert {family("distkit.locks.acquisitions"), family("distkit.locks.wait.duration"),
            family("distkit.ratelimit.decisions")} <= seen
    line = next(x for x in text.splitlines() if x.startswith("distkit_locks_acquisitions_total{"))
    assert 'kind="lock"' in line and 'outcome="acquired"' in line and line.endswith(" 2.0")
    with pytest.raises(OSError):  # closed with the block
        urllib.request.urlopen(ep.url, timeout=2)


@pytest.mark.slow
@pytest.mark.parametrize("app", sorted(EXPECTED))
def test_each_reference_app_produces_its_metric_families(app: str, wiring: Wiring) -> None:
    if importlib.util.find_spec(f"examples.{app}") is None:
        pytest.skip(f"examples.{app} is not on this branch yet")
    main = importlib.import_module(f"examples.{app}").main
    errors: list[BaseException] = []

    def run() -> None:
        try:
            main(wiring)
        except BaseException as exc:
            errors.append(exc)

    with endpoint_mod.serve(0) as ep:
        # observable counters read live objects, which an earlier app may have left: count only what grows
        before = scrape(ep.url)
        peak: dict[str, float] = {}
        worker = threading.Thread(target=run, name=f"app-{app}", daemon=True)
        worker.start()
        deadline = time.monotonic() + 240
        while True:  # observable counters cover live objects: scrape while the app runs
            for name, total in scrape(ep.url).items():
                peak[name] = max(peak.get(name, 0.0), total)
            if not worker.is_alive():
                break
            assert time.monotonic() < deadline, f"{app} did not finish"
            worker.join(0.2)
    seen = {name for name, total in peak.items() if total > before.get(name, 0.0)}
    assert not errors, errors
    missing = {n for n in EXPECTED[app] if family(n) not in seen}
    assert not missing, f"{app} produced {sorted(seen)}; missing {sorted(missing)}"


def test_docs_and_dashboard_cover_every_declared_metric() -> None:
    names = declared()
    assert len(names) >= 35 and all(re.fullmatch(r"distkit\.[a-z_]+(\.[a-z_]+)+", n) for n in names)
    doc = (ROOT / "docs" / "metrics.md").read_text("utf-8")
    documented = set(re.findall(r"^\| `(distkit\.[a-z_.]+)` \|", doc, re.M))
    assert documented == set(names)
    dash = json.loads((ROOT / "examples" / "grafana" / "distkit.json").read_text("utf-8"))
    assert [v["name"] for v in dash["templating"]["list"] if v["type"] == "datasource"] == ["datasource"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert sorted(p["title"] for p in panels) == sorted(names)  # one panel per metric family
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}"
        exprs = " ".join(t["expr"] for t in p["targets"])
        assert family(p["title"]) in exprs, p["title"]
