"""The textbook faust-streaming version (contender b, the baseline).

Written the way faust's documentation shows windowed aggregation, and deliberately not
optimised: a ``Table(...).hopping(5, 1, expires=...)`` on the RocksDB store, updated per trade
with ``table[ticker] += trade`` (faust reads, modifies and writes every one of the trade's
five windows, and sends five changelog records), trades and statistics as ``faust.Record``
models with faust's JSON serializer.

Emission. faust's documented ways to get results out are ``on_window_close`` and reading
``.current()`` / ``.delta()``. ``on_window_close`` cannot give correct results here: it fires
from a wall-clock timer (``table_cleanup_interval``, 30 s) when windows expire by wall-clock
time, and it keeps a single "last closed window" for the whole table, so with several
partitions on one worker it skips the windows of all but one partition. This version
therefore emits updates, as Kafka Streams does without ``suppress``: after each trade it reads
the five windows the trade changed (``table[ticker].delta(0..4)``) and sends each to the
output topic. The last update of a window is its final value, which is what is checked.

``expires`` is one hour: the benchmark's input is stamped up to "now", and faust expires
windows against the wall clock, so any shorter expiry could delete windows while trades are
still being added to them (a backlog older than ``expires`` is silently corrupted).
"""

from __future__ import annotations

import os
import struct
from datetime import timedelta

import faust

from bench.contenders.events import FirstRecord

SIZE_S = 5
STEP_S = 1

app = faust.App(
    os.environ["BENCH_APP_ID"],
    broker=f"kafka://{os.environ['BENCH_BOOTSTRAP']}",
    store="rocksdb://",
    datadir=os.environ["BENCH_DATA_DIR"],
    topic_partitions=int(os.environ["BENCH_PARTITIONS"]),
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    broker_commit_interval=1.0,  # the harness's common commit interval (docs/benchmarks.md)
    web_host="127.0.0.1",
    web_bind="127.0.0.1",
    web_port=int(os.environ["BENCH_WEB_PORT"]),
)


class Trade(faust.Record, serializer="json"):
    type: str
    ticker: str
    price: float
    size: int


class TradeStats(faust.Record, serializer="json"):
    ticker: str = ""
    type: str = ""
    count: int = 0
    sum_price: float = 0.0
    min_price: float = 0.0
    max_price: float = 0.0
    volume: int = 0
    notional: float = 0.0

    def __add__(self, trade: Trade) -> TradeStats:
        if not self.count:
            return TradeStats(
                trade.ticker,
                trade.type,
                1,
                trade.price,
                trade.price,
                trade.price,
                trade.size,
                trade.price * trade.size,
            )
        return TradeStats(
            self.ticker,
            self.type if self.type == trade.type else "MIXED",
            self.count + 1,
            self.sum_price + trade.price,
            min(self.min_price, trade.price),
            max(self.max_price, trade.price),
            self.volume + trade.size,
            self.notional + trade.price * trade.size,
        )

    def result(self, window_start_ms: int) -> dict[str, object]:
        """The output value, with the same fields as tradestats'."""
        return {
            "ticker": self.ticker,
            "type": self.type,
            "countTrades": self.count,
            "sumPrice": self.sum_price,
            "minPrice": self.min_price,
            "maxPrice": self.max_price,
            "avgPrice": self.sum_price / self.count,
            "volume": self.volume,
            "vwap": self.notional / self.volume if self.volume else None,
            "windowStart": window_start_ms,
            "windowEnd": window_start_ms + SIZE_S * 1000,
        }


trades_topic = app.topic(os.environ["BENCH_INPUT"], key_type=bytes, value_type=Trade)
stats_topic = app.topic(os.environ["BENCH_OUTPUT"], key_type=bytes, value_serializer="json")

trade_stats = app.Table(
    "trade-stats",
    default=TradeStats,
    value_type=TradeStats,
    partitions=int(os.environ["BENCH_PARTITIONS"]),
).hopping(SIZE_S, STEP_S, expires=timedelta(hours=1))

first_record = FirstRecord()


@app.agent(trades_topic)
async def aggregate(trades: faust.StreamT[Trade]) -> None:
    async for trade in trades:
        first_record()
        trade_stats[trade.ticker] += trade
        timestamp = trades.current_event.message.timestamp  # type: ignore[union-attr]
        windows = trade_stats[trade.ticker]
        for back in range(SIZE_S // STEP_S):
            start_s, _ = trade_stats.table.window.delta(timestamp, back)  # type: ignore[union-attr]
            start_ms = round(start_s * 1000)
            await stats_topic.send(
                key=trade.ticker.encode() + struct.pack(">q", start_ms),
                value=windows.delta(back).result(start_ms),
            )


if __name__ == "__main__":
    app.main()
