"""Checking a contender's output against the brute-force oracle (``tests/oracle.py``).

The check covers every window of a sample of tickers (all tickers by default in ``--quick``).
What "correct" means depends on how the contender emits:

* final results (tradestats, Quix Streams, Kafka Streams with suppress): exactly the expected
  windows, each with the oracle's value; a window emitted twice must carry the same value;
* updates (faust textbook, Kafka Streams without suppress): exactly the expected windows, and
  the *last* update of each window (in its output partition's order) carries the oracle's
  value.

Values are compared with ``assert_window_values_match``: integers and strings exactly, floats
to a relative 1e-9 (summation order differs between implementations).

The same read notes when the last window result of a regular ticker reached the broker (the
output topics use log-append time): that, not the last record of any kind, is when a
contender's output was complete. The closing tickers' own windows stay open until a contender
closes them by wall clock, as tradestats does after its idle timeout; counting those would
charge it for a feature the others lack.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from bench.contenders.base import Emission
from bench.dataset import WINDOW_ADVANCE_MS, WINDOW_SIZE_MS, Dataset
from bench.results import Correctness
from tests.oracle import assert_window_values_match, expected_windows, window_value
from tradestats.core.codec import decode_windowed_key

__all__ = ["OutputCheck", "OutputReader", "check_output", "read_topic"]

_EXAMPLES = 3
_LOG_APPEND_TIME = 1  # a record's timestamp_type when the broker stamped it


async def read_topic(bootstrap: str, topic: str, handle: Callable[[ConsumerRecord], None]) -> int:
    """Feed every record now in ``topic`` to ``handle``, partition by partition, in order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    seen = 0
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=50_000)
            for tp, records in batches.items():
                for record in records:
                    handle(record)
                seen += len(records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return seen


@dataclass(frozen=True)
class OutputCheck:
    correctness: Correctness
    last_result_ms: int | None
    """Log-append time of the last window result of a regular ticker (None: no such record,
    or the topic does not stamp append times)."""


async def check_output(
    bootstrap: str, topic: str, dataset: Dataset, emission: Emission
) -> OutputCheck:
    """Compare the sampled tickers' windows in ``topic`` with the oracle's, and note when the
    last regular window result was appended."""
    reader = OutputReader(dataset, emission)
    await read_topic(bootstrap, topic, reader.add)
    return reader.check()


class OutputReader:
    """Takes a contender's output records in each partition's order (see :func:`check_output`)."""

    def __init__(self, dataset: Dataset, emission: Emission) -> None:
        self.dataset = dataset
        self.emission = emission
        self._sampled = {ticker.encode() for ticker in dataset.sample_tickers}
        self._closing = {ticker.encode() for ticker in dataset.closing}
        self._last: dict[tuple[str, int], bytes] = {}
        self._conflicts: list[tuple[str, int]] = []
        self._last_result_ms: int | None = None

    def add(self, record: ConsumerRecord) -> None:
        key = record.key
        if key is None:
            return
        ticker = key[:-8]
        if ticker not in self._closing and record.timestamp_type == _LOG_APPEND_TIME:
            self._last_result_ms = max(self._last_result_ms or record.timestamp, record.timestamp)
        if ticker not in self._sampled:
            return
        window = decode_windowed_key(key)
        previous = self._last.get(window)
        if (
            self.emission is Emission.FINAL
            and previous is not None
            and previous != record.value
            and json.loads(previous) != json.loads(record.value)
        ):
            self._conflicts.append(window)
        self._last[window] = record.value

    def check(self) -> OutputCheck:
        """The verdict on everything added so far."""
        last, conflicts = self._last, self._conflicts
        expected = expected_windows(self.dataset.sample, WINDOW_SIZE_MS, WINDOW_ADVANCE_MS)
        problems: list[str] = []
        missing = sorted(expected.windows.keys() - last.keys())
        extra = sorted(last.keys() - expected.windows.keys())
        if missing:
            problems.append(f"{len(missing)} windows missing, e.g. {missing[:_EXAMPLES]}")
        if extra:
            problems.append(f"{len(extra)} unexpected windows, e.g. {extra[:_EXAMPLES]}")
        if conflicts:
            problems.append(
                f"{len(conflicts)} windows emitted with different values, "
                f"e.g. {conflicts[:_EXAMPLES]}"
            )
        wrong: list[str] = []
        for (ticker, start), trades in sorted(expected.windows.items()):
            if (ticker, start) not in last:
                continue
            actual: dict[str, Any] = json.loads(last[(ticker, start)])
            try:
                assert_window_values_match(
                    actual, window_value(ticker, start, WINDOW_SIZE_MS, trades)
                )
            except AssertionError as exc:
                wrong.append(f"{(ticker, start)}: {str(exc)[:300]}")
        if wrong:
            problems.append(f"{len(wrong)} windows with wrong values, e.g. {wrong[:_EXAMPLES]}")
        which = "last update per window" if self.emission is Emission.UPDATES else "final result"
        detail = (
            f"{len(expected.windows)} windows of {len(self.dataset.sample_tickers)} tickers, "
            f"{which}: " + ("; ".join(problems) if problems else "all match the oracle")
        )
        correctness = Correctness(not problems, len(expected.windows), detail)
        return OutputCheck(correctness, self._last_result_ms)
