"""The benchmark's reading of a contender's output (broker-free): the oracle verdict, and when
the output was complete, which the closing tickers' own windows must not move."""

from __future__ import annotations

import json

from aiokafka.structs import ConsumerRecord

from bench.contenders.base import Emission
from bench.correctness import OutputReader
from bench.dataset import WINDOW_SIZE_MS, Dataset, DatasetSpec
from tests.oracle import Record
from tradestats.core.codec import encode_windowed_key
from tradestats.core.trades import Trade, encode_trade

LOG_APPEND_TIME, CREATE_TIME = 1, 0
BASE_MS = 1_700_000_000_000


def dataset() -> Dataset:
    """One sampled ticker with one trade at BASE_MS + 500 (in the 5 windows from BASE_MS - 4000),
    and one closing ticker."""
    spec = DatasetSpec(trades=1, tickers=1, partitions=1, event_rate=1.0, seed=1)
    data = Dataset(spec, "in", base_ms=BASE_MS, sample_tickers=["AAA"], closing=["ZZEND0"])
    trade = encode_trade(Trade("BID", "AAA", 10.0, 3))
    data.sample.append(Record(0, 0, BASE_MS + 500, b"AAA", trade))
    return data


def result(ticker: str, start: int, appended_ms: int, *, price: float = 10.0) -> ConsumerRecord:
    value = {
        "type": "BID",
        "ticker": ticker,
        "countTrades": 1,
        "sumPrice": price,
        "minPrice": price,
        "maxPrice": price,
        "avgPrice": price,
        "volume": 3,
        "vwap": price,
        "windowStart": start,
        "windowEnd": start + WINDOW_SIZE_MS,
    }
    return ConsumerRecord(
        "out", 0, 0, appended_ms, LOG_APPEND_TIME, encode_windowed_key(ticker, start),
        json.dumps(value).encode(), None, 0, 0, (),
    )  # fmt: skip


STARTS = [BASE_MS - 4000 + 1000 * k for k in range(5)]


def test_the_closing_tickers_windows_do_not_move_the_done_time() -> None:
    reader = OutputReader(dataset(), Emission.FINAL)
    for k, start in enumerate(STARTS):
        reader.add(result("AAA", start, appended_ms=5_000 + k))
    reader.add(result("ZZEND0", BASE_MS + 6000, appended_ms=19_000))  # closed by idle timeout
    check = reader.check()
    assert check.correctness.passed, check.correctness.detail
    assert check.last_result_ms == 5_004


def test_a_regular_ticker_outside_the_sample_still_counts() -> None:
    reader = OutputReader(dataset(), Emission.FINAL)
    for start in STARTS:
        reader.add(result("AAA", start, appended_ms=5_000))
    reader.add(result("BBB", BASE_MS, appended_ms=7_000))
    assert reader.check().last_result_ms == 7_000


def test_create_time_stamps_give_no_done_time() -> None:
    reader = OutputReader(dataset(), Emission.FINAL)
    record = result("AAA", STARTS[0], appended_ms=5_000)
    reader.add(ConsumerRecord(**{**vars(record), "timestamp_type": CREATE_TIME}))
    assert reader.check().last_result_ms is None


def test_a_wrong_or_missing_window_fails_the_check() -> None:
    reader = OutputReader(dataset(), Emission.FINAL)
    for start in STARTS[:-1]:
        reader.add(
            result("AAA", start, appended_ms=5_000, price=11.0 if start == STARTS[0] else 10.0)
        )
    correctness = reader.check().correctness
    assert not correctness.passed
    assert "1 windows missing" in correctness.detail, correctness.detail
    assert "1 windows with wrong values" in correctness.detail, correctness.detail
