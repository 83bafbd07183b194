"""Quix Streams (contender c): ``hopping_window(5000, 1000)``, the same statistics, final
results only (``.final(closing_strategy="partition")``), written as Quix's documentation shows.

Runs in a virtual environment of its own (see ``quix.py``): Quix Streams pins pydantic below
the version the project uses. The commit (checkpoint) interval is set to the harness's common
1 s instead of Quix's 5 s default (docs/benchmarks.md says why).
"""

from __future__ import annotations

import os
import struct
from typing import Any

from quixstreams import Application

from bench.contenders.events import FirstRecord

SIZE_MS = 5000
STEP_MS = 1000


def initializer(trade: dict[str, Any]) -> dict[str, Any]:
    price, size = trade["price"], trade["size"]
    return {
        "ticker": trade["ticker"],
        "type": trade["type"],
        "count": 1,
        "sum": price,
        "min": price,
        "max": price,
        "volume": size,
        "notional": price * size,
    }


def reducer(agg: dict[str, Any], trade: dict[str, Any]) -> dict[str, Any]:
    price, size = trade["price"], trade["size"]
    return {
        "ticker": agg["ticker"],
        "type": agg["type"] if agg["type"] == trade["type"] else "MIXED",
        "count": agg["count"] + 1,
        "sum": agg["sum"] + price,
        "min": min(agg["min"], price),
        "max": max(agg["max"], price),
        "volume": agg["volume"] + size,
        "notional": agg["notional"] + price * size,
    }


def result(window: dict[str, Any]) -> dict[str, Any]:
    agg = window["value"]
    return {
        "ticker": agg["ticker"],
        "type": agg["type"],
        "countTrades": agg["count"],
        "sumPrice": agg["sum"],
        "minPrice": agg["min"],
        "maxPrice": agg["max"],
        "avgPrice": agg["sum"] / agg["count"],
        "volume": agg["volume"],
        "vwap": agg["notional"] / agg["volume"] if agg["volume"] else None,
        "windowStart": window["start"],
        "windowEnd": window["end"],
    }


def windowed_key(value: dict[str, Any]) -> bytes:
    """Kafka Streams' windowed key, like every other contender's output."""
    return str(value["ticker"]).encode() + struct.pack(">q", value["windowStart"])


def main() -> None:
    first_record = FirstRecord()
    app = Application(
        broker_address=os.environ["BENCH_BOOTSTRAP"],
        consumer_group=os.environ["BENCH_GROUP"],
        auto_offset_reset="earliest",
        state_dir=os.environ["BENCH_DATA_DIR"],
        commit_interval=1.0,
        loglevel="WARNING",
        on_message_processed=lambda topic, partition, offset: first_record(),
    )
    trades = app.topic(
        os.environ["BENCH_INPUT"], key_deserializer="bytes", value_deserializer="json"
    )
    stats = app.topic(os.environ["BENCH_OUTPUT"], key_serializer="bytes", value_serializer="json")
    sdf = app.dataframe(trades)
    sdf = sdf.hopping_window(duration_ms=SIZE_MS, step_ms=STEP_MS).reduce(
        reducer=reducer, initializer=initializer
    )
    # Windows close on the partition's stream time, as in Kafka Streams (and tradestats):
    # Quix's default closes a key's windows only when that same key sees a later message, so
    # a ticker's last windows would stay open however far the partition's time moved on.
    sdf = sdf.final(closing_strategy="partition").apply(result)
    sdf.to_topic(stats, key=windowed_key)
    app.run()


if __name__ == "__main__":
    main()
