"""distkit's OpenTelemetry metrics: one declaration per instrument, created lazily, a no-op without an SDK.

Every module declares its instruments once, at import (``_ACQ = counter("distkit.locks.acquisitions", "1",
"...")``), and records with ``_ACQ.add(1, attrs)``. Nothing is asked of OpenTelemetry until a meter provider is
installed: the hot paths of locks and limiters pay one function call and two attribute reads (~0.1 us) then.

Where the provider comes from, first match wins:

* :func:`use_meter_provider` (``with use_meter_provider(MeterProvider(...)):``) -- for tests, or for an
  application that keeps distkit's metrics apart from OpenTelemetry's process-wide provider (which can be set
  only once per process);
* OpenTelemetry's global provider (``opentelemetry.metrics.set_meter_provider`` or
  ``OTEL_PYTHON_METER_PROVIDER``).

The real instrument is created on the first recording under a provider, per provider, so a provider installed
after import is picked up. Attributes must be of bounded cardinality: names of limiters, handlers, sagas,
services, outcomes -- never keys, user ids or tokens.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

try:  # opentelemetry-api is a dependency; a --no-deps install lacks it and then every instrument is a no-op
    from opentelemetry import metrics as _api
    from opentelemetry.metrics import NoOpMeterProvider as _NoOp
    from opentelemetry.metrics import _internal
except ImportError:  # pragma: no cover
    _internal = None  # type: ignore[assignment]
    _api = None  # type: ignore[assignment]
    _NoOp = ()  # type: ignore[assignment,misc]

log = logging.getLogger("distkit.metrics")

Attributes = Mapping[str, str | bool | int | float]

_ENV_PROVIDER = "OTEL_PYTHON_METER_PROVIDER" in os.environ
_override: Any = None  # set by use_meter_provider
_all: dict[str, Instrument] = {}
_registry_lock = threading.Lock()


def provider() -> Any:
    """The meter provider distkit records to now, or ``None`` (no SDK: record nothing)."""
    if _override is not None:
        return _override
    if _internal is None or (_internal._METER_PROVIDER is None and not _ENV_PROVIDER):
        return None
    p = _api.get_meter_provider()
    return None if isinstance(p, _NoOp) else p


def enabled() -> bool:
    """True when a provider is installed: call sites that must compute something first (a duration, an
    attribute set) check this before doing that work."""
    return _override is not None or (
        _internal is not None and (_internal._METER_PROVIDER is not None or _ENV_PROVIDER)
    )


@contextmanager
def use_meter_provider(meter_provider: Any) -> Iterator[Any]:
    """Record distkit's metrics to ``meter_provider`` inside the block (instead of OpenTelemetry's global one)."""
    global _override
    previous, _override = _override, meter_provider
    try:
        for inst in list(_all.values()):
            inst.bind()  # observable instruments register their callbacks with the new provider now
        yield meter_provider
    finally:
        _override = previous


class Instrument:
    """One metric; the real OpenTelemetry instrument is made per provider on first use."""

    __slots__ = ("_made", "_real", "buckets", "callback", "description", "kind", "name", "scope", "unit")

    def __init__(self, kind: str, name: str, unit: str, description: str,
                 callback: Callable[[], Iterable[tuple[float, Attributes]]] | None = None,
                 buckets: Sequence[float] | None = None) -> None:
        self.kind, self.name, self.unit, self.description = kind, name, unit, description
        self.buckets = buckets
        self.scope = ".".join(name.split(".")[:2])  # distkit.<module>
        self.callback = callback
        self._made: Any = None  # the provider self._real belongs to
        self._real: Any = None

    def bind(self) -> Any:
        """The real instrument under the current provider (made on first use), or ``None``."""
        p = provider()
        if p is None:
            return None
        if p is self._made:
            return self._real
        with _registry_lock:
            if p is not self._made:
                try:
                    self._real = self._create(p)
                except Exception:  # a provider that refuses the instrument must not break the call recording it
                    log.warning("distkit: could not create metric %s", self.name, exc_info=True)
                    self._real = None
                self._made = p
        return self._real

    def _create(self, p: Any) -> Any:
        meter = p.get_meter(self.scope)
        if self.kind == "counter":
            return meter.create_counter(self.name, unit=self.unit, description=self.description)
        if self.kind == "histogram":
            return meter.create_histogram(self.name, unit=self.unit, description=self.description,
                                          explicit_bucket_boundaries_advisory=self.buckets)
        if self.kind == "gauge":
            return meter.create_gauge(self.name, unit=self.unit, description=self.description)
        if self.kind == "updown":
            return meter.create_up_down_counter(self.name, unit=self.unit, description=self.description)
        callback = self.callback
        assert callback is not None

        def observe(_options: Any) -> list[Any]:
            from opentelemetry.metrics import Observation

            return [Observation(v, dict(a)) for v, a in callback()]

        return meter.create_observable_counter(self.name, [observe], unit=self.unit, description=self.description)

    def add(self, amount: float, attributes: Attributes | None = None) -> None:
        """Counters: add ``amount`` (a no-op without a provider)."""
        if _override is None and (_internal is None or (_internal._METER_PROVIDER is None and not _ENV_PROVIDER)):
            return
        real = self.bind()
        if real is not None:
            real.add(amount, attributes)

    def record(self, value: float, attributes: Attributes | None = None) -> None:
        """Histograms record ``value``; gauges set it (a no-op without a provider)."""
        if _override is None and (_internal is None or (_internal._METER_PROVIDER is None and not _ENV_PROVIDER)):
            return
        real = self.bind()
        if real is None:
            return
        if self.kind == "gauge":
            real.set(value, attributes)
        else:
            real.record(value, attributes)


def _declare(kind: str, name: str, unit: str, description: str,
             callback: Callable[[], Iterable[tuple[float, Attributes]]] | None = None,
             buckets: Sequence[float] | None = None) -> Instrument:
    with _registry_lock:
        inst = _all.get(name)
        if inst is None:
            inst = _all[name] = Instrument(kind, name, unit, description, callback, buckets)
        elif inst.kind != kind:
            raise ValueError(f"metric {name} already declared as a {inst.kind}")
    return inst


def counter(name: str, unit: str, description: str) -> Instrument:
    """A monotonic counter ``name`` (declared once per process; a second declaration returns the first)."""
    return _declare("counter", name, unit, description)


SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZES = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


def histogram(name: str, unit: str, description: str) -> Instrument:
    """A histogram; unit ``s`` gets buckets from 0.5 ms to 30 s, others 1 to 1000 (OpenTelemetry's default
    buckets are millisecond-sized, useless for seconds)."""
    return _declare("histogram", name, unit, description, buckets=SECONDS if unit == "s" else SIZES)


def gauge(name: str, unit: str, description: str) -> Instrument:
    """A synchronous gauge: :meth:`Instrument.record` sets the current value for an attribute set."""
    return _declare("gauge", name, unit, description)


def observable_counter(name: str, unit: str, description: str,
                       callback: Callable[[], Iterable[tuple[float, Attributes]]]) -> Instrument:
    """A counter read at collection time from ``callback()`` -> ``[(total, attributes), ...]``; call
    :meth:`Instrument.bind` where the counted objects are made, so the callback is registered with the provider."""
    return _declare("observable_counter", name, unit, description, callback)


def declared() -> dict[str, Instrument]:
    """Every instrument declared so far, by name (for docs and dashboards)."""
    return dict(_all)
