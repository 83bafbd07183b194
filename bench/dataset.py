"""The input every contender consumes: produced once per run, same bytes, partitions, times.

Event time advances at a fixed rate (``event_rate`` trades per second of event time), so the
windows do not depend on how fast anything was produced or consumed: trade ``i`` is stamped
``base + floor(i * 1000 / event_rate)`` ms. Timestamps never decrease within a partition, so
no trade is late for any contender (a late-record policy would otherwise differ between
them). The stream ends with one *closing trade per partition*, stamped a window size and an
advance after the last trade, on dedicated tickers: it moves every partition's stream time
past all windows of the regular tickers, so contenders that emit final results close them all
without waiting for an idle timeout. The closing tickers are left out of every check.

``base`` is the wall clock at production time minus the stream's span, so the stream ends
about "now": faust's window expiry runs on the wall clock (see ``contenders/faust_app.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

from aiokafka import AIOKafkaProducer

from tests.oracle import Record
from tradestats.core.trades import Trade, encode_trade
from tradestats.loadgen import TradeGenerator, tickers
from tradestats.service.kafka import partition_for_key

__all__ = [
    "WINDOW_ADVANCE_MS",
    "WINDOW_SIZE_MS",
    "Dataset",
    "DatasetSpec",
    "closing_tickers",
    "count_windows",
]

WINDOW_SIZE_MS = 5000
WINDOW_ADVANCE_MS = 1000
_CHUNK = 20_000


def closing_tickers(partitions: int) -> list[str]:
    """One ticker per partition (``ZZEND<n>``), chosen so it hashes to that partition."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        name = f"ZZEND{n}"
        found.setdefault(partition_for_key(name.encode(), partitions), name)
        n += 1
    return [found[p] for p in range(partitions)]


@dataclass(frozen=True)
class DatasetSpec:
    trades: int
    tickers: int
    partitions: int
    event_rate: float
    seed: int

    @property
    def span_ms(self) -> int:
        return (self.trades - 1) * 1000 // int(self.event_rate) if self.trades else 0


@dataclass
class Dataset:
    """What was produced, and the records of the sampled tickers for the oracle."""

    spec: DatasetSpec
    topic: str
    base_ms: int
    records: int = 0
    bytes: int = 0
    seconds: float = 0.0
    sample_tickers: list[str] = field(default_factory=list)
    sample: list[Record] = field(default_factory=list)
    closing: list[str] = field(default_factory=list)
    windows: int = 0
    """Window results the regular trades make (every ticker), what a contender emits."""


def count_windows(stamped: list[tuple[int, Trade]]) -> int:
    """Distinct (ticker, window) pairs of trades in time order: a trade at ``t`` is in the
    windows starting from ``t`` floored to the advance back to a window size before it."""
    newest: dict[str, int] = {}  # ticker -> start of the newest window counted
    total = 0
    per_trade = WINDOW_SIZE_MS // WINDOW_ADVANCE_MS
    for timestamp, trade in stamped:
        last = timestamp - timestamp % WINDOW_ADVANCE_MS
        counted = newest.get(trade.ticker)
        total += (
            per_trade if counted is None else min(per_trade, (last - counted) // WINDOW_ADVANCE_MS)
        )
        newest[trade.ticker] = last
    return total


def _sample_tickers(names: list[str], sample: int) -> list[str]:
    """Every k-th ticker (deterministic), ``sample`` of them; 0 or more than exist = all."""
    if sample <= 0 or sample >= len(names):
        return list(names)
    step = len(names) / sample
    return [names[int(i * step)] for i in range(sample)]


async def produce_dataset(
    bootstrap: str,
    topic: str,
    spec: DatasetSpec,
    *,
    sample: int,
    on_progress: Callable[[int], None] | None = None,
) -> Dataset:
    """Produce the trades and closing trades to ``topic`` (which must exist, empty)."""
    names = tickers(spec.tickers)
    now_ms = int(time.time() * 1000)
    dataset = Dataset(spec, topic, base_ms=now_ms - spec.span_ms - 1000)
    dataset.sample_tickers = _sample_tickers(names, sample)
    dataset.closing = closing_tickers(spec.partitions)
    wanted = set(dataset.sample_tickers)
    partition_by_ticker = {n: partition_for_key(n.encode(), spec.partitions) for n in [*names]}

    trades = islice(iter(TradeGenerator(names, seed=spec.seed)), spec.trades)
    stamped: list[tuple[int, Trade]] = [
        (dataset.base_ms + i * 1000 // int(spec.event_rate), trade)
        for i, trade in enumerate(trades)
    ]
    dataset.windows = count_windows(stamped)
    last = stamped[-1][0] if stamped else dataset.base_ms
    close_at = last + WINDOW_SIZE_MS + WINDOW_ADVANCE_MS
    for partition, name in enumerate(dataset.closing):
        stamped.append((close_at, Trade("ASK", name, 1.0, 1)))
        partition_by_ticker[name] = partition

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    started = time.monotonic()
    try:
        for begin in range(0, len(stamped), _CHUNK):
            chunk = stamped[begin : begin + _CHUNK]
            sent = []
            for timestamp, trade in chunk:
                key = trade.ticker.encode()
                value = encode_trade(trade)
                future = await producer.send(
                    topic,
                    value,
                    key=key,
                    partition=partition_by_ticker[trade.ticker],
                    timestamp_ms=timestamp,
                )
                sent.append((future, timestamp, key, value, trade.ticker in wanted))
                dataset.bytes += len(value) + len(key)
            for future, timestamp, key, value, keep in sent:
                meta = await future
                if keep:
                    dataset.sample.append(
                        Record(meta.partition, meta.offset, timestamp, key, value)
                    )
            dataset.records += len(chunk)
            if on_progress is not None:
                on_progress(len(chunk))
    finally:
        await producer.stop()
    dataset.seconds = time.monotonic() - started
    return dataset
