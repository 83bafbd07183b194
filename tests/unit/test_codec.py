"""The output's wire format: windowed keys and JSON values, whole or from a shared head."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradestats.core.codec import (
    WindowStats,
    decode_windowed_key,
    encode_bounds,
    encode_result,
    encode_value,
    encode_value_head,
)

prices = st.floats(min_value=sys.float_info.min, max_value=sys.float_info.max)


@st.composite
def window_stats(draw: st.DrawFn) -> WindowStats:
    start = draw(st.integers(-(2**62), 2**62))
    volume = draw(st.integers(0, 2**40))
    return WindowStats(
        draw(st.from_regex(r"[A-Za-z0-9._-]{1,32}", fullmatch=True)),
        draw(st.sampled_from(["ASK", "BID", "MIXED"])),
        draw(st.integers(1, 2**40)),
        draw(prices),
        draw(prices),
        draw(prices),
        draw(prices),
        volume,
        draw(prices) if volume else None,
        start,
        start + draw(st.integers(1, 10**9)),
    )


@given(window_stats())
def test_a_head_and_bounds_make_the_value_byte_for_byte(stats: WindowStats) -> None:
    bounds = (stats.window_start, stats.window_end)
    unbounded = WindowStats(*[getattr(stats, f) for f in stats.__struct_fields__[:-2]], 0, 0)
    value = encode_value_head(unbounded) + encode_bounds(*bounds)
    assert value == encode_value(stats)
    decoded = json.loads(value)
    assert (decoded["windowStart"], decoded["windowEnd"]) == bounds
    assert list(decoded)[:6] == [
        "ticker",
        "type",
        "countTrades",
        "sumPrice",
        "minPrice",
        "maxPrice",
    ]


@given(window_stats())
def test_a_result_carries_the_windowed_key_and_the_value(stats: WindowStats) -> None:
    key, value, timestamp, headers, route, ticker, avg_price = encode_result(stats, 7)
    assert decode_windowed_key(key) == (stats.ticker, stats.window_start)
    assert value == encode_value(stats)
    assert (timestamp, headers) == (stats.window_end - 1, None)  # the window's last ms
    assert (route, ticker, avg_price) == (7, stats.ticker, stats.avg_price)


def test_a_head_is_only_made_of_a_value_without_bounds() -> None:
    with pytest.raises(ValueError, match="without bounds"):
        encode_value_head(WindowStats("MMM", "ASK", 1, 1.0, 1.0, 1.0, 1.0, 1, 1.0, 0, 5000))
