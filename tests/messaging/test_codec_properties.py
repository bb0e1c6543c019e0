"""Invariants of what the messaging layer stores and sends (Hypothesis)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distkit.errors import InvalidTopicError, SerializationError
from distkit.messaging.message import check_topic_name, decode_headers, encode_headers
from distkit.messaging.outbox import dump_headers, load_headers

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)  # valid UTF-8: no lone surrogates
header_values = st.one_of(text, st.binary(max_size=20))
headers = st.dictionaries(text.filter(bool), header_values, max_size=6)


@settings(max_examples=60, deadline=None)
@given(headers)
def test_outbox_header_storage_round_trips_exactly(h):
    assert load_headers(dump_headers(h)) == h  # bytes stay bytes, text stays text, nothing latin-1


@settings(max_examples=60, deadline=None)
@given(headers)
def test_text_headers_go_out_as_utf8_and_bytes_unchanged(h):
    wire = dict(encode_headers(h))
    for name, value in h.items():
        assert wire[name] == (value.encode("utf-8") if isinstance(value, str) else value)
    decoded = decode_headers(list(wire.items()))
    assert all(decoded[n] == v for n, v in h.items() if isinstance(v, str))


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_topic_names_follow_kafkas_rule(name):
    legal = bool(re.fullmatch(r"[a-zA-Z0-9._-]{1,249}", name)) and name not in (".", "..")
    if legal:
        check_topic_name(name)
    else:
        with pytest.raises(InvalidTopicError):
            check_topic_name(name)


def test_lone_surrogate_header_is_refused():
    with pytest.raises(SerializationError, match="not valid text"):
        encode_headers({"h": "\ud800"})
