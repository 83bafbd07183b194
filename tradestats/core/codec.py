"""Wire formats: the output topic's windowed key and JSON value, and the stored state records.

The output key is exactly Kafka Streams' ``TimeWindowedSerializer`` for a String key: the UTF-8
key bytes followed by the window start as an 8-byte big-endian epoch-millisecond long, so
consumers of the original Java app read our output unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from tradestats.core.aggregate import Aggregate

__all__ = [
    "PARTITION_META_KEY",
    "PartitionMeta",
    "WindowResult",
    "WindowStats",
    "decode_pane_parts",
    "decode_partition_meta",
    "decode_windowed_key",
    "encode_bounds",
    "encode_pane_parts",
    "encode_partition_meta",
    "encode_result",
    "encode_value",
    "encode_value_head",
    "encode_window_start",
    "encode_windowed_key",
    "result_timestamp",
]

_WINDOW_START = struct.Struct(">q")


def encode_windowed_key(ticker: str, window_start: int) -> bytes:
    """Kafka Streams' windowed key: key bytes + big-endian int64 window start."""
    return ticker.encode() + encode_window_start(window_start)


def decode_windowed_key(data: bytes) -> tuple[str, int]:
    """Inverse of :func:`encode_windowed_key`."""
    if len(data) < _WINDOW_START.size:
        raise ValueError(f"windowed key too short: {len(data)} bytes")
    (start,) = _WINDOW_START.unpack_from(data, len(data) - _WINDOW_START.size)
    return data[: -_WINDOW_START.size].decode(), start


class WindowStats(msgspec.Struct, rename="camel", frozen=True, gc=False):
    """The output value: the original app's fields (``type``, ``ticker``, ``countTrades``,
    ``sumPrice``, ``minPrice``, ``avgPrice``) plus max, volume, VWAP and the window bounds.

    Not tracked by the cyclic garbage collector (it holds no containers): thin tickers close
    thousands of windows per batch."""

    ticker: str
    type: str
    count_trades: int
    sum_price: float
    min_price: float
    max_price: float
    avg_price: float
    volume: int
    vwap: float | None
    window_start: int
    window_end: int


#: A window result as it is sent: laid out as the output record it is (windowed key, JSON value,
#: record timestamp, headers: None), then its route (the output partition, see
#: :class:`~tradestats.core.partition.PartitionState`), ticker and average price, which the
#: worker reads for routing and metrics. A plain tuple handed to the producer as it is: a window
#: close at thin densities makes tens of thousands at a time, and a second tuple per result, or
#: a dict lookup of its route, was a tenth of their cost.
WindowResult = tuple[bytes, bytes, int, None, int, str, float]

_stats_encoder = msgspec.json.Encoder()
encode_value = _stats_encoder.encode
"""The output value of a :class:`WindowStats`: JSON with the original app's field names."""
_BOUNDS = b',"windowStart":%d,"windowEnd":%d}'
_NO_BOUNDS = _BOUNDS % (0, 0)


def encode_result(stats: WindowStats, route: int = 0) -> WindowResult:
    """The result of one window: its windowed key and JSON value, stamped with the window's
    last millisecond."""
    ticker = stats.ticker
    return (
        encode_windowed_key(ticker, stats.window_start),
        encode_value(stats),
        result_timestamp(stats.window_end),
        None,
        route,
        ticker,
        stats.avg_price,
    )


def result_timestamp(window_end: int) -> int:
    """The record timestamp of a window's result: its last millisecond (the end is exclusive),
    so the result belongs to the window on any time-based read of the output."""
    return window_end - 1


def encode_value_head(stats: WindowStats) -> bytes:
    """The JSON value of ``stats`` up to its window bounds, which ``stats`` has as 0.

    The windows of a thin ticker's pane differ in their bounds only:
    ``head + encode_bounds(start, end)`` is the value of each (the bounds are the value's
    last fields), one encoding for five windows.
    """
    encoded = encode_value(stats)
    if not encoded.endswith(_NO_BOUNDS):
        raise ValueError(f"not a value without bounds: {encoded!r}")
    return encoded[: -len(_NO_BOUNDS)]


def encode_bounds(window_start: int, window_end: int) -> bytes:
    """The end of a JSON value that :func:`encode_value_head` began."""
    return _BOUNDS % (window_start, window_end)


def encode_window_start(window_start: int) -> bytes:
    """The end of a windowed key: the window start, 8 bytes big-endian."""
    return _WINDOW_START.pack(window_start)


# --- stored state -------------------------------------------------------------------------
#
# One record per ticker holds all its live pane parts and the highest source offset applied
# to them; one record per partition holds the stream clock. Both live in the same table and
# changelog partition, written in order, so a restore never sees a clock ahead of the panes.

PARTITION_META_KEY = b"\x00partition"
_STATE_VERSION = 1
_PANES_HEADER = struct.Struct("<BqI")
_PANE_PART = struct.Struct("<qHqdddqdB")
_META = struct.Struct("<Bqqq")


def encode_pane_parts(applied_offset: int, panes: Mapping[int, Mapping[int, Aggregate]]) -> bytes:
    """Encode a ticker's pane parts (pane start -> eligibility -> aggregate)."""
    pack = _PANE_PART.pack
    body = [
        pack(
            pane,
            eligibility,
            agg.count,
            agg.sum_price,
            agg.min_price,
            agg.max_price,
            agg.volume,
            agg.notional,
            agg.types,
        )
        for pane, by_eligibility in panes.items()
        for eligibility, agg in by_eligibility.items()
    ]
    return _PANES_HEADER.pack(_STATE_VERSION, applied_offset, len(body)) + b"".join(body)


def decode_pane_parts(data: bytes) -> tuple[int, list[tuple[int, int, Aggregate]]]:
    """Inverse of :func:`encode_pane_parts`: ``(applied offset, parts)``."""
    version, applied_offset, count = _PANES_HEADER.unpack_from(data)
    _check_version(version)
    parts = [
        (pane, eligibility, Aggregate(*fields))
        for pane, eligibility, *fields in _PANE_PART.iter_unpack(data[_PANES_HEADER.size :])
    ]
    if len(parts) != count:
        raise ValueError(f"pane record holds {len(parts)} parts, header says {count}")
    return applied_offset, parts


@dataclass(frozen=True, slots=True)
class PartitionMeta:
    """A partition's clock: stream time, how far closed windows were emitted, last offset.

    Times are epoch milliseconds, ``NO_TIME`` before the first trade.
    """

    stream_time: int
    emitted_time: int
    applied_offset: int


def encode_partition_meta(meta: PartitionMeta) -> bytes:
    return _META.pack(_STATE_VERSION, meta.stream_time, meta.emitted_time, meta.applied_offset)


def decode_partition_meta(data: bytes) -> PartitionMeta:
    version, stream_time, emitted_time, applied_offset = _META.unpack(data)
    _check_version(version)
    return PartitionMeta(stream_time, emitted_time, applied_offset)


def _check_version(version: int) -> None:
    if version != _STATE_VERSION:
        raise ValueError(f"unsupported state record version {version}")
