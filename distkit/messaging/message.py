"""The message type every broker speaks, and the codec that turns values into bytes.

A :class:`Message` is what a handler receives and what it returns to be produced. Values are encoded with
a :class:`Codec` (JSON by default) *before* anything reaches a broker, so an unserialisable value fails
fast with :class:`~distkit.errors.SerializationError` and nothing is sent.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from distkit.errors import InvalidArgumentError, InvalidTopicError, SerializationError

HeaderValue = str | bytes
Headers = dict[str, HeaderValue]


@dataclass(frozen=True)
class Message:
    """One record. ``partition``/``offset``/``timestamp`` are set on consumed messages, ``None`` on new ones.

    >>> Message(topic="orders", key=b"42", value={"order_id": 42}, headers={"event-id": "e-1"}).key
    b'42'
    """

    topic: str
    value: Any = None
    key: bytes | None = None
    headers: Headers = field(default_factory=dict)
    partition: int | None = None
    offset: int | None = None
    timestamp: int | None = None  # unix ms
    raw_value: bytes | None = field(default=None, compare=False, repr=False)
    """The value bytes as they were on the broker (consumed messages only; ``None`` for a tombstone)."""

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header decoded as UTF-8 text (Kafka headers are bytes on the wire)."""
        raw = self.headers.get(name)
        if raw is None:
            return default
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


class Codec(Protocol):
    """Turns message values into bytes and back. Implementations must never fall back to pickle."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


def _json_default(obj: Any) -> Any:
    if isinstance(obj, uuid.UUID | Decimal):
        return str(obj)
    if isinstance(obj, dt.datetime | dt.date | dt.time):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode("ascii")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


_ENCODER = json.JSONEncoder(default=_json_default, separators=(",", ":"))
try:  # the C encoder, built once (JSONEncoder.encode builds a new one per call). No circular-reference markers:
    # a shared markers dict is not thread-safe; a cycle ends in RecursionError instead, reported the same way.
    from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
    from json.encoder import encode_basestring_ascii as _encode_ascii

    _C_ENCODE: Any = _c_make_encoder(None, _json_default, _encode_ascii, None, ":", ",", False, False, True)
except (ImportError, TypeError):  # pragma: no cover - PyPy or a Python without the C accelerator
    _C_ENCODE = None


def _to_json(value: Any) -> str:
    if _C_ENCODE is None or isinstance(value, str):
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


class JsonCodec:
    """JSON values (UUID, Decimal, datetime and bytes are written as strings).

    ``bytes`` values pass through unchanged, so a producer can send pre-encoded payloads. Payloads that are
    not JSON decode to their raw ``bytes`` (a consumer never dies on someone else's non-JSON record).
    """

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        try:
            return _to_json(value).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(
                f"cannot serialise message value of type {type(value).__name__}: {exc}; "
                "pass JSON-compatible data, bytes, or a broker with another codec"
            ) from exc

    def decode(self, data: bytes) -> Any:
        try:
            return _DECODER.decode(data.decode("utf-8"))  # json.loads(bytes) sniffs the encoding on every call
        except UnicodeDecodeError:
            try:
                return json.loads(data)  # UTF-16/32 JSON, as json.loads accepts it
            except (UnicodeDecodeError, ValueError):
                return data
        except ValueError:
            return data


_DECODER = json.JSONDecoder()


def consumed(
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    value: Any,
    headers: Headers,
    timestamp: int | None,
    raw_value: bytes | None,
) -> Message:
    """A consumed :class:`Message`, built without the frozen dataclass's per-field ``object.__setattr__``
    (the consumer's hot path: one per record)."""
    m = object.__new__(Message)
    m.__dict__.update(
        topic=topic,
        value=value,
        key=key,
        headers=headers,
        partition=partition,
        offset=offset,
        timestamp=timestamp,
        raw_value=raw_value,
    )
    return m


def encode_key(key: bytes | str | int | None) -> bytes | None:
    """Keys are bytes on the wire; ``str`` and ``int`` keys are written as UTF-8 text."""
    if type(key) is str:
        return key.encode("utf-8")
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str | int) and not isinstance(key, bool):
        return str(key).encode("utf-8")
    raise SerializationError(f"message key must be bytes, str or int, got {type(key).__name__}")


_TOPIC_RE = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def check_topic_name(topic: Any) -> None:
    """Kafka's topic-name rule (``[a-zA-Z0-9._-]``, 1-249 characters, not ``.`` or ``..``)."""
    if not isinstance(topic, str) or not topic:
        raise InvalidTopicError(f"a topic name must be a non-empty string, got {topic!r}")
    if not _TOPIC_RE.fullmatch(topic) or topic in (".", ".."):
        raise InvalidTopicError(
            f"invalid topic name {topic[:60]!r}: use 1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-'"
        )


def encode_headers(headers: Mapping[str, Any] | None) -> list[tuple[str, bytes]]:
    """Headers as Kafka's list of ``(name, bytes)``: ``str`` values as UTF-8, ``bytes`` unchanged."""
    out: list[tuple[str, bytes]] = []
    if not headers:
        return out
    for name, value in headers.items():
        if not isinstance(name, str) or not name:
            raise SerializationError(f"header names must be non-empty str, got {name!r}")
        if isinstance(value, bytes):
            out.append((name, value))
        elif isinstance(value, str):
            try:
                out.append((name, value.encode("utf-8")))
            except UnicodeEncodeError as exc:  # lone surrogates
                raise SerializationError(f"header {name!r} is not valid text ({exc}); pass bytes instead") from exc
        elif isinstance(value, bytearray | memoryview):
            out.append((name, bytes(value)))
        else:
            raise SerializationError(f"header {name!r} must be str or bytes, got {type(value).__name__}")
    return out


def check_partition(partition: Any) -> None:
    if partition is not None and (not isinstance(partition, int) or isinstance(partition, bool) or partition < 0):
        raise InvalidArgumentError(f"partition must be None or an int >= 0, got {partition!r}")


def decode_headers(raw: list[tuple[str, bytes | None]] | None) -> Headers:
    """Kafka headers back to a dict; text values become ``str``, anything else stays ``bytes``."""
    out: Headers = {}
    if not raw:
        return out
    for name, value in raw:
        if value is None:
            out[name] = b""
            continue
        try:
            out[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            out[name] = value
    return out
