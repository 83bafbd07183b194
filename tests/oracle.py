"""An independent brute-force computation of the expected windows, for checking tradestats.

Deliberately naive and written from the specification, not from the implementation: no panes,
no eligibility indices, no incremental state. For every partition it walks the records in
offset order, keeps the stream time, validates with the standard library's JSON parser, and
appends each trade to the list of every window it belongs to that is still open.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

TICKER = re.compile(r"[A-Za-z0-9._-]{1,32}")


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


@dataclass
class Expected:
    """Windows (ticker, start) -> list of (price, size, type), plus the rejected records."""

    windows: dict[tuple[str, int], list[tuple[float, int, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    #: The (partition, offset) of each window's trades, in the order of ``windows``.
    members: dict[tuple[str, int], list[tuple[int, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    invalid: list[Record] = field(default_factory=list)
    late: list[Record] = field(default_factory=list)


def parse_trade(key: bytes | None, value: bytes | None) -> tuple[str, float, int, str] | None:
    """The trade in a record, or None when the record is invalid (per the specification)."""
    if value is None or key is None:
        return None
    try:
        obj = json.loads(value.decode("utf-8"), parse_constant=lambda _: math.nan)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(obj, dict):
        return None
    kind, ticker, price, size = (obj.get(name) for name in ("type", "ticker", "price", "size"))
    if kind not in ("ASK", "BID"):
        return None
    if not isinstance(ticker, str) or not TICKER.fullmatch(ticker):
        return None
    if isinstance(price, bool) or not isinstance(price, int | float):
        return None
    try:
        price = float(price)
    except OverflowError:  # an integer literal beyond the double range
        return None
    if not math.isfinite(price) or price <= 0:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= 2**31 - 1:
        return None
    if key != ticker.encode():
        return None
    return ticker, price, size, kind


def expected_windows(
    records: list[Record], size_ms: int, advance_ms: int, grace_ms: int = 0
) -> Expected:
    """Brute force: every window of every valid, not-late trade, per Kafka Streams' rules."""
    expected = Expected()
    by_partition: dict[int, list[Record]] = defaultdict(list)
    for record in records:
        by_partition[record.partition].append(record)
    for partition_records in by_partition.values():
        stream_time = None
        for record in sorted(partition_records, key=lambda r: r.offset):
            trade = parse_trade(record.key, record.value)
            if trade is None or record.timestamp < 0:
                expected.invalid.append(record)
                continue
            ticker, price, size, kind = trade
            t = record.timestamp
            stream_time = t if stream_time is None else max(stream_time, t)
            accepted = False
            start = t - t % advance_ms
            while start > t - size_ms:
                if start + size_ms + grace_ms > stream_time:
                    expected.windows[(ticker, start)].append((price, size, kind))
                    expected.members[(ticker, start)].append((record.partition, record.offset))
                    accepted = True
                start -= advance_ms
            if not accepted:
                expected.late.append(record)
    return expected


def window_value(
    ticker: str, start: int, size_ms: int, trades: list[tuple[float, int, str]]
) -> dict[str, Any]:
    """The output value the specification asks for, computed from the window's trade list."""
    prices = [price for price, _, _ in trades]
    volume = sum(size for _, size, _ in trades)
    kinds = {kind for _, _, kind in trades}
    return {
        "ticker": ticker,
        "type": kinds.pop() if len(kinds) == 1 else "MIXED",
        "countTrades": len(trades),
        "sumPrice": math.fsum(prices),
        "minPrice": min(prices),
        "maxPrice": max(prices),
        "avgPrice": math.fsum(prices) / len(trades),
        "volume": volume,
        "vwap": math.fsum(p * s for p, s, _ in trades) / volume if volume else None,
        "windowStart": start,
        "windowEnd": start + size_ms,
    }


def assert_window_values_match(
    actual: dict[str, Any], expected: dict[str, Any], rel: float = 1e-9
) -> None:
    """Exact for integers and strings, ``rel`` for floats (summation order differs)."""
    assert actual.keys() == expected.keys(), (actual, expected)
    for name, want in expected.items():
        got = actual[name]
        if isinstance(want, float) and got is not None:
            assert math.isclose(got, want, rel_tol=rel), (name, got, want, expected)
        else:
            assert got == want, (name, got, want, expected)
