"""The result codec: tagged JSON that round-trips the types handlers return (never pickle).

``UUID``, ``datetime``/``date``/``time``/``timedelta``, ``Decimal``, ``bytes``, tuples, sets, dicts with non-string
keys, ``NaN``/``inf``, ``Enum`` members and dataclass instances come back as the same types, and falsy values (``0``,
``""``, ``None``, ``[]``) are stored as themselves — a duplicate gets exactly what the first call returned
(Powertools #8065, #8090).

>>> import uuid
>>> c = TaggedJsonCodec()
>>> u = uuid.UUID(int=1)
>>> c.decode(c.encode({"id": u, "n": 0})) == {"id": u, "n": 0}
True

Why a schema-free tagged codec rather than a typed one driven by the return annotation (msgspec, pydantic's
``TypeAdapter``): handlers are often unannotated or annotated ``-> dict``, the stored bytes must decode the same in
any process whatever the annotation says, and it needs no extra dependency. Enum and dataclass types are stored by
``module:qualname`` and resolved on decode only to an ``Enum`` subclass or a dataclass (never an arbitrary callable);
a class that cannot be found by that name (defined inside a function) is refused when the result is *encoded*, so a
stored record always decodes. A typed codec is one ``encode``/``decode`` pair away (:class:`ResultCodec`).

``JsonCodec`` is the old name of :class:`TaggedJsonCodec`, kept as a deprecated alias: it was easy to confuse with
:class:`distkit.messaging.JsonCodec`, which writes UUIDs, datetimes and Decimals as plain strings and decodes them
as strings.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import importlib
import json
import math
import sys
import uuid
import warnings
from decimal import Decimal
from typing import Any, Protocol

from distkit.errors import CodecError

_TAG = "__distkit__"
_PLAIN = frozenset({str, int, bool, type(None)})


class ResultCodec(Protocol):
    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


def type_name(cls: type) -> str:
    """``module:qualname`` of a class that can be found again by that name; :class:`CodecError` otherwise."""
    name = f"{cls.__module__}:{cls.__qualname__}"
    try:
        found = resolve_type(name)
    except (ImportError, AttributeError, ValueError):
        found = None
    if found is not cls:
        raise CodecError(
            f"cannot store a {cls.__qualname__}: its class must be importable by name ({name}); define it at module "
            "level (not inside a function) or pass another codec"
        )
    return name


def resolve_type(name: str) -> Any:
    """The object ``module:qualname`` names (imports the module if needed)."""
    module, _, qualname = name.partition(":")
    if not module or not qualname:
        raise ValueError(f"not a module:qualname type name: {name!r}")
    obj: Any = sys.modules.get(module) or importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _float(value: float) -> Any:
    if math.isfinite(value):
        return value
    return {_TAG: "float", "v": repr(value)}  # 'nan', 'inf', '-inf'


def _to_json(value: Any) -> Any:
    cls = value.__class__
    if cls in _PLAIN:
        return value
    if cls is float:
        return _float(value)
    if cls is dict:
        for k in value:
            if k.__class__ is not str:
                break
        else:
            if _TAG not in value:
                return {k: _to_json(v) for k, v in value.items()}
        return {_TAG: "dict", "v": [[_to_json(k), _to_json(v)] for k, v in value.items()]}
    if cls is list:
        return [_to_json(v) for v in value]
    if isinstance(value, enum.Enum):  # before int/str: IntEnum and StrEnum members keep their type
        return {_TAG: "enum", "t": type_name(cls), "v": _to_json(value.value)}
    if isinstance(value, int):  # int/str subclasses (not Enum) are stored as the plain type
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        return _float(float(value))
    if isinstance(value, dict):
        return _to_json(dict(value))
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, tuple):
        return {_TAG: "tuple", "v": [_to_json(v) for v in value]}
    if isinstance(value, set | frozenset):
        return {_TAG: "set" if isinstance(value, set) else "frozenset", "v": [_to_json(v) for v in value]}
    if isinstance(value, uuid.UUID):
        return {_TAG: "uuid", "v": str(value)}
    if isinstance(value, dt.datetime):
        return {_TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {_TAG: "date", "v": value.isoformat()}
    if isinstance(value, dt.time):
        return {_TAG: "time", "v": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {_TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, Decimal):
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {_TAG: "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return {_TAG: "dataclass", "t": type_name(cls), "v": fields}
    raise CodecError(
        f"cannot store a result of type {cls.__name__}: return JSON-compatible data (dict/list/str/int/float/bool/"
        "None, UUID, datetime, timedelta, Decimal, bytes, Enum, dataclass) or pass another codec"
    )


def _enum(name: str, value: Any) -> Any:
    cls = resolve_type(name)
    if not (isinstance(cls, type) and issubclass(cls, enum.Enum)):
        raise CodecError(f"stored enum type {name} is not an Enum")
    return cls(value)


def _dataclass(name: str, fields: dict[str, Any]) -> Any:
    cls = resolve_type(name)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise CodecError(f"stored dataclass type {name} is not a dataclass")
    return cls(**fields)


_DECODERS: dict[str, Any] = {
    "uuid": uuid.UUID,
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "decimal": Decimal,
    "bytes": base64.b64decode,
    "float": float,
    "timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
}


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        tag = value.get(_TAG)
        if tag is None:
            return {k: _from_json(v) for k, v in value.items()}
        inner = value["v"]
        if tag == "dict":
            return {_from_json(k): _from_json(v) for k, v in inner}
        if tag == "tuple":
            return tuple(_from_json(v) for v in inner)
        if tag == "set":
            return {_from_json(v) for v in inner}
        if tag == "frozenset":
            return frozenset(_from_json(v) for v in inner)
        if tag == "enum":
            return _enum(value["t"], _from_json(inner))
        if tag == "dataclass":
            return _dataclass(value["t"], {k: _from_json(v) for k, v in inner.items()})
        return _DECODERS[tag](inner)
    return value


class TaggedJsonCodec:
    """Tagged JSON: plain JSON for plain data, ``{"__distkit__": type, "v": ...}`` for the rest. The output is
    ASCII (so it is safe on a ``decode_responses=True`` Redis client)."""

    def encode(self, value: Any) -> bytes:
        try:
            return json.dumps(_to_json(value), separators=(",", ":"), allow_nan=False).encode("ascii")
        except (ValueError, TypeError, RecursionError) as exc:
            if isinstance(exc, CodecError):
                raise
            raise CodecError(f"cannot store result: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        try:
            return _from_json(json.loads(data.decode("utf-8") if data.__class__ is bytes else data))
        except CodecError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, ImportError, IndexError) as exc:
            raise CodecError(f"stored result is not valid distkit JSON: {exc!r}") from exc


def __getattr__(name: str) -> Any:
    if name == "JsonCodec":
        warnings.warn(
            "distkit.idempotency.JsonCodec is deprecated: use distkit.idempotency.TaggedJsonCodec (the same codec; "
            "the old name was easy to confuse with distkit.messaging.JsonCodec)",
            DeprecationWarning,
            stacklevel=2,
        )
        return TaggedJsonCodec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
