"""The result codec round-trips handler results exactly (pure unit tests)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distkit.errors import CodecError
from distkit.idempotency import JsonCodec

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.uuids(),
    st.datetimes(timezones=st.just(dt.timezone.utc)),
    st.dates(),
    st.binary(),
    st.decimals(allow_nan=False, allow_infinity=False),
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
    c = JsonCodec()
    back = c.decode(c.encode(value))
    assert back == value and type(back) is type(value)


def test_awkward_values():
    c = JsonCodec()
    for v in [{"__distkit__": "x"}, {1: "int key"}, {"s": {1, 2}}, (), b"", Decimal("-0.00")]:
        assert c.decode(c.encode(v)) == v
    with pytest.raises(CodecError, match="object"):
        c.encode(object())
    with pytest.raises(CodecError):
        c.encode(float("nan"))
    with pytest.raises(CodecError):
        c.decode(b"not json")
    assert c.decode(c.encode(uuid.UUID(int=0))) == uuid.UUID(int=0)
