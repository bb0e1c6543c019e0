"""Lazy re-exports, so ``import distkit.<module>`` stays cheap (and works without extras) until a class that
needs a client library (Redis, Kafka, SQL) is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from distkit._extras import MissingExtraError, extra_for, require


def lazy_getattr(
    package: str, names: Mapping[str, str], requires: Mapping[str, str] | None = None
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``names[attr]`` on first access of ``attr``.

    A missing client library raises :class:`~distkit._extras.MissingExtraError` (an ``ImportError``) that names
    the extra to install, e.g. ``pip install 'distkit[redis]'``. ``requires[attr] = extra`` checks the extra
    up front, for a name whose module imports without it (the client library loads when the object is made).
    """
    needs = dict(requires or {})

    def __getattr__(name: str) -> Any:
        if name in names:
            if name in needs:
                require(needs[name], f"{package}.{name}")
            try:
                module = importlib.import_module(names[name])
            except ImportError as exc:
                extra = extra_for(exc)
                if extra is None:
                    raise
                raise MissingExtraError(f"{package}.{name}", extra) from exc
            return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
