"""JSON codec for stored results that round-trips the types handlers return (never pickle).

``UUID``, ``datetime``/``date``/``time``, ``Decimal``, ``bytes``, tuples and sets come back as the same types, and
falsy values (``0``, ``""``, ``None``, ``[]``) are stored as themselves — a duplicate gets exactly what the first
call returned (Powertools #8065, #8090).

>>> import uuid
>>> c = JsonCodec()
>>> u = uuid.UUID(int=1)
>>> c.decode(c.encode({"id": u, "n": 0})) == {"id": u, "n": 0}
True
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any, Protocol

from distkit.errors import CodecError

_TAG = "__distkit__"


class ResultCodec(Protocol):
    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


def _to_json(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and _TAG not in value:
            return {k: _to_json(v) for k, v in value.items()}
        return {_TAG: "dict", "v": [[_to_json(k), _to_json(v)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {_TAG: "tuple", "v": [_to_json(v) for v in value]}
    if isinstance(value, set | frozenset):
        return {_TAG: "set", "v": [_to_json(v) for v in value]}
    if isinstance(value, uuid.UUID):
        return {_TAG: "uuid", "v": str(value)}
    if isinstance(value, dt.datetime):
        return {_TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {_TAG: "date", "v": value.isoformat()}
    if isinstance(value, dt.time):
        return {_TAG: "time", "v": value.isoformat()}
    if isinstance(value, Decimal):
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, bytes | bytearray):
        return {_TAG: "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    raise CodecError(
        f"cannot store a result of type {type(value).__name__}: return JSON-compatible data "
        "(dict/list/str/int/float/bool/None, UUID, datetime, Decimal, bytes) or pass another codec"
    )


_DECODERS: dict[str, Any] = {
    "uuid": uuid.UUID,
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "decimal": Decimal,
    "bytes": base64.b64decode,
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
        return _DECODERS[tag](inner)
    return value


class JsonCodec:
    """Tagged JSON: plain JSON for plain data, ``{"__distkit__": type, "v": ...}`` for the rest."""

    def encode(self, value: Any) -> bytes:
        try:
            return json.dumps(_to_json(value), separators=(",", ":"), allow_nan=False).encode("utf-8")
        except ValueError as exc:  # NaN / infinity
            raise CodecError(f"cannot store result: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        try:
            return _from_json(json.loads(data))
        except (ValueError, KeyError, TypeError) as exc:
            raise CodecError(f"stored result is not valid distkit JSON: {exc}") from exc
