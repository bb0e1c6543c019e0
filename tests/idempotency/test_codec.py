"""The result codec round-trips handler results exactly (pure unit tests)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import uuid
import warnings
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distkit.errors import CodecError
from distkit.idempotency import TaggedJsonCodec


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass(frozen=True)
class Receipt:
    id: uuid.UUID
    amount: Decimal
    color: Color
    took: dt.timedelta
    lines: tuple[str, ...] = ()


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.uuids(),
    st.datetimes(timezones=st.just(dt.timezone.utc)),
    st.dates(),
    st.timedeltas(),
    st.binary(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.sampled_from(Color),
    st.sampled_from(Level),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4), st.tuples(inner, inner)
    ),
    max_leaves=20,
)


@given(values)
def test_round_trip_is_exact(value):
    c = TaggedJsonCodec()
    back = c.decode(c.encode(value))
    assert back == value and type(back) is type(value)


def test_awkward_values():
    c = TaggedJsonCodec()
    for v in [{"__distkit__": "x"}, {1: "int key"}, {"s": {1, 2}}, (), b"", Decimal("-0.00"), frozenset({1})]:
        back = c.decode(c.encode(v))
        assert back == v and type(back) is type(v)
    with pytest.raises(CodecError, match="object"):
        c.encode(object())
    with pytest.raises(CodecError):
        c.decode(b"not json")
    assert c.decode(c.encode(uuid.UUID(int=0))) == uuid.UUID(int=0)


def test_dataclasses_enums_timedelta_and_nan_round_trip():
    c = TaggedJsonCodec()
    r = Receipt(uuid.UUID(int=5), Decimal("19.90"), Color.BLUE, dt.timedelta(days=-1, microseconds=7), ("a",))
    assert c.decode(c.encode(r)) == r
    assert c.decode(c.encode([Level.HIGH]))[0] is Level.HIGH  # an IntEnum stays an IntEnum, not an int
    back = c.decode(c.encode({"x": float("nan"), "y": float("-inf")}))
    assert math.isnan(back["x"]) and back["y"] == float("-inf")
    assert c.encode(r).isascii()


def test_local_classes_are_refused_when_encoding_never_when_decoding():
    @dataclasses.dataclass
    class Local:
        n: int

    with pytest.raises(CodecError, match="module level"):
        TaggedJsonCodec().encode(Local(1))


def test_json_codec_is_a_deprecated_alias():
    import distkit.idempotency as idem

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = idem.JsonCodec
    assert old is TaggedJsonCodec
    assert any(issubclass(w.category, DeprecationWarning) and "TaggedJsonCodec" in str(w.message) for w in caught)
