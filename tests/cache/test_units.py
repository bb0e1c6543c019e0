"""Pure parts of the cache (no Redis): the envelope, jitter, XFetch and the L1."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from distkit.cache.entry import Entry, JsonCodec, decode, encode, jittered_ms, xfetch
from distkit.cache.local import LocalCache

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=20,
)


@given(json_values, st.integers(0, 2**50), st.integers(0, 2**40), st.integers(0, 10**7))
def test_envelope_roundtrip(value: object, expires: int, extra: int, delta: int) -> None:
    entry = Entry(value, expires, expires + extra, delta, is_null=False)
    codec = JsonCodec()
    raw = encode(entry, codec)
    assert decode(raw, codec) == entry
    assert decode(raw.encode("utf-8"), codec) == entry


def test_null_marker_roundtrip() -> None:
    entry = Entry(None, 10, 20, 3, is_null=True)
    assert decode(encode(entry, JsonCodec()), JsonCodec()) == entry


@given(st.floats(0.001, 10**6), st.floats(0, 0.99), st.floats(0, 1, exclude_max=True))
def test_jitter_stays_in_its_band(seconds: float, jitter: float, rnd: float) -> None:
    ms = jittered_ms(seconds, jitter, rnd)
    assert ms >= 1
    assert seconds * 1000 * (1 - jitter) - 1 <= ms <= seconds * 1000 * (1 + jitter) + 1


@given(st.integers(1, 10**6), st.integers(1, 10**5), st.floats(0.1, 10), st.floats(1e-9, 1))
@settings(max_examples=300)
def test_xfetch_matches_its_formula_and_is_monotone_in_time(remaining: int, delta: int, beta: float,
                                                             rnd: float) -> None:
    now = 1_000_000_000
    entry = Entry("v", now + remaining, now + remaining * 2, delta)
    fired = xfetch(now, entry, beta, rnd)
    assert fired == (-delta * beta * math.log(rnd) >= remaining)
    if fired:  # the same draw later (closer to the expiry) fires too
        assert xfetch(now + remaining // 2, entry, beta, rnd) or remaining // 2 == 0
    assert not xfetch(now + remaining, entry, beta, rnd)  # at/after the expiry it is a reload, not an early one
    assert not xfetch(now, entry, 0.0, rnd)


def test_l1_is_a_bounded_lru_with_a_ttl() -> None:
    l1 = LocalCache(max_entries=3, local_ttl_ms=1000)
    for i in range(5):
        l1.put(f"k{i}", Entry(i, 10**6, 10**6, 1), now_ms=0)
    assert len(l1) == 3 and l1.get("k0", 0) is None and l1.get("k1", 0) is None
    assert l1.get("k2", 0) is not None  # touched: now the most recent
    l1.put("k5", Entry(5, 10**6, 10**6, 1), now_ms=0)
    assert l1.get("k3", 0) is None and l1.get("k2", 0) is not None
    assert l1.get("k2", 999) is not None and l1.get("k2", 1000) is None  # local_ttl_ms


def test_l1_never_outlives_the_entry_and_refuses_fills_after_an_invalidation() -> None:
    l1 = LocalCache(max_entries=10, local_ttl_ms=10_000)
    l1.put("k", Entry(1, 50, 100, 1), now_ms=0)
    assert l1.get("k", 99) is not None and l1.get("k", 100) is None  # stale_until bounds the L1 copy
    version = l1.version
    l1.pop("k")  # a backplane message arrives while a reader was reading Redis
    assert not l1.put("k", Entry("old", 10**6, 10**6, 1), 0, version)
    assert l1.get("k", 0) is None
    assert l1.put("k", Entry("new", 10**6, 10**6, 1), 0, l1.version)
    assert LocalCache(0, 1000).put("k", Entry(1, 10, 10, 1), 0) is False  # disabled L1
