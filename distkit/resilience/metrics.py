"""Events and OpenTelemetry counters of :mod:`distkit.resilience`.

Counters (no-ops until an OpenTelemetry SDK is installed; absent without ``opentelemetry-api``):

* ``distkit.resilience.transitions{breaker, from, to}``: every circuit-breaker state change;
* ``distkit.resilience.rejections{name, kind, state}``: calls not made (``kind`` = ``breaker`` or ``bulkhead``);
* ``distkit.resilience.fallbacks{function, error}``: calls that ``degrade`` answered with the fallback.

The same happenings reach a callback hook (``on_event=``) as :class:`Event` objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from distkit import _metrics

log = logging.getLogger("distkit.resilience")

_COUNTERS = {
    n: _metrics.counter(f"distkit.resilience.{n}", "1", desc)
    for n, desc in (
        ("transitions", "circuit-breaker state changes"),
        ("rejections", "calls rejected by a breaker or a bulkhead"),
        ("fallbacks", "calls answered by a degrade fallback"),
    )
}


@dataclass(frozen=True)
class Event:
    """``kind`` is ``"transition"`` (``from_state`` → ``to_state``, with ``reason``), ``"rejected"`` (a call not
    made; ``to_state`` is the state that refused it) or ``"fallback"`` (degrade served the fallback)."""

    kind: str
    name: str
    from_state: str = ""
    to_state: str = ""
    reason: str = ""
    at_ms: int = 0


EventHook = Callable[[Event], None]


class Recorder:
    """One primitive's counters and hook. Attribute sets are built once per distinct value."""

    __slots__ = ("_attrs", "hook", "kind", "name")

    def __init__(self, name: str, kind: str, hook: EventHook | None) -> None:
        self.name = name
        self.kind = kind
        self.hook = hook
        self._attrs: dict[tuple[str, ...], dict[str, str]] = {}

    def _add(self, counter: str, key: tuple[str, ...], attrs: Callable[[], dict[str, str]]) -> None:
        if not _metrics.enabled():
            return
        a = self._attrs.get(key)
        if a is None:
            a = self._attrs[key] = attrs()
        _COUNTERS[counter].add(1, a)

    def _hook(self, event: Event) -> None:
        if self.hook is not None:
            try:
                self.hook(event)
            except Exception:  # a broken hook must not break the protected call
                log.exception("distkit.resilience: on_event hook failed for %s", event)

    def transition(self, old: str, new: str, reason: str, at_ms: int) -> None:
        self._add("transitions", ("t", old, new), lambda: {"breaker": self.name, "from": old, "to": new})
        log.info("circuit breaker %r: %s -> %s (%s)", self.name, old, new, reason)
        self._hook(Event("transition", self.name, old, new, reason, at_ms))

    def rejected(self, state: str, at_ms: int) -> None:
        self._add("rejections", ("r", state), lambda: {"name": self.name, "kind": self.kind, "state": state})
        self._hook(Event("rejected", self.name, "", state, "", at_ms))

    def fallback(self, error: str, at_ms: int) -> None:
        self._add("fallbacks", ("f", error), lambda: {"function": self.name, "error": error})
        self._hook(Event("fallback", self.name, "", "", error, at_ms))
