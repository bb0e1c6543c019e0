"""An opt-in Prometheus scrape endpoint for the reference apps: ``python -m examples --metrics-port 9464``
(or ``DISTKIT_METRICS_PORT=9464``), then scrape ``http://127.0.0.1:9464/metrics``.

distkit records through the OpenTelemetry API; this module supplies the SDK side: a ``MeterProvider`` whose
``PrometheusMetricReader`` answers scrapes, served by ``prometheus_client`` on its own registry and thread.
The provider is handed to distkit with :func:`distkit._metrics.use_meter_provider` rather than installed as
OpenTelemetry's global provider (which can be set only once per process), so a test can start and stop the
endpoint as often as it likes. ``examples/grafana/distkit.json`` is a dashboard for what it serves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from distkit import _metrics

ENV = "DISTKIT_METRICS_PORT"


@dataclass(frozen=True)
class Endpoint:
    """A running scrape endpoint: ``url`` is what Prometheus scrapes."""

    host: str
    port: int
    provider: Any

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"


def port_from(argv: list[str], environ: Mapping[str, str] | None = None) -> tuple[int | None, list[str]]:
    """``--metrics-port N`` (or ``--metrics-port=N``) from ``argv``, else ``DISTKIT_METRICS_PORT``; returns the
    port (``None``: no endpoint) and the remaining arguments."""
    env = os.environ if environ is None else environ
    rest: list[str] = []
    port: str | None = env.get(ENV) or None
    it = iter(argv)
    for arg in it:
        if arg == "--metrics-port":
            port = next(it, None)
            if port is None:
                raise SystemExit("--metrics-port needs a port number")
        elif arg.startswith("--metrics-port="):
            port = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if port is None:
        return None, rest
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SystemExit(f"metrics port must be 0-65535, got {port!r}")
    return int(port), rest


@contextmanager
def serve(port: int, host: str = "127.0.0.1") -> Iterator[Endpoint]:
    """Serve distkit's metrics on ``http://host:port/metrics`` inside the block (port 0: any free port)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "distkit-examples"}))
    server, thread = start_http_server(port, addr=host, registry=registry)
    try:
        with _metrics.use_meter_provider(provider):
            yield Endpoint(host, int(server.server_port), provider)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        provider.shutdown()
