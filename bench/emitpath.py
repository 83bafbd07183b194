"""``python -m bench.emitpath``: the worker's emit path in one process, without a broker.

Trades of one density are folded into a :class:`PartitionState` in batches as the worker gets
them, and every window they close goes through the code the worker runs for it: ``close_windows``,
the records of :func:`tradestats.core.codec.encode_results` and aiokafka's record-batch builder
(what :class:`tradestats.service.output.Output` fills). Each stage is timed separately, per
window result; ``--profile`` prints a cProfile summary of the whole loop instead. Kafka's round
trips are not in it: that is what the sweep of ``python -m bench`` measures.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from tests.oracle import Record
from tradestats.core.codec import WindowStats, encode_results
from tradestats.core.partition import PartitionState
from tradestats.core.trades import encode_trade
from tradestats.core.windows import WindowSpec
from tradestats.loadgen import TradeGenerator, tickers

__all__ = ["main"]

_BATCH_BYTES = 256 * 1024  # the worker producer's max_batch_size
_CHECKPOINT_EVERY = 6  # batches: about one poll of 20,000 records, as often as the worker


@dataclass
class _Stages:
    seconds: dict[str, float]
    results: int = 0

    def timed(self, stage: str, call: Callable[[], Any]) -> Any:
        started = time.process_time()
        value = call()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.process_time() - started
        return value


def _records(trades: int, names: list[str], rate: float) -> list[Record]:
    generated = islice(iter(TradeGenerator(names, seed=42)), trades)
    return [
        Record(0, i, 1_000_000 + i * 1000 // int(rate), t.ticker.encode(), encode_trade(t))
        for i, t in enumerate(generated)
    ]


def _append_all(results: list[WindowStats], keys: list[bytes], values: list[bytes]) -> int:
    batches = 1
    builder = BatchBuilder(_BATCH_BYTES, 0)
    for stats, key, value in zip(results, keys, values, strict=True):
        timestamp = stats.window_end - 1
        if builder.append(timestamp=timestamp, key=key, value=value) is None:
            builder = BatchBuilder(_BATCH_BYTES, 0)
            builder.append(timestamp=timestamp, key=key, value=value)
            batches += 1
    return batches


def run(records: list[Record], batch: int, stages: _Stages) -> None:
    state = PartitionState(WindowSpec(5000, 1000))
    for begin in range(0, len(records), batch):
        chunk = records[begin : begin + batch]
        stages.timed("process", lambda chunk=chunk: state.process(chunk))
        results = stages.timed("close_windows", state.close_windows)
        if results:
            encoded = stages.timed("encode_results", lambda r=results: encode_results(r))
            stages.timed("batch append", lambda r=results, e=encoded: _append_all(r, *e))
            stages.results += len(results)
        if begin // batch % _CHECKPOINT_EVERY == _CHECKPOINT_EVERY - 1:
            stages.timed("checkpoint", state.checkpoint)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.emitpath", description=__doc__)
    parser.add_argument("--density", type=float, default=1.0, help="trades / ticker / s")
    parser.add_argument("--rate", type=float, default=10_000.0, help="trades / s of event time")
    parser.add_argument("--trades", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=3_333, help="records per batch event")
    parser.add_argument("--profile", action="store_true", help="cProfile summary instead")
    args = parser.parse_args(argv)
    names = tickers(max(1, round(args.rate / args.density)))
    records = _records(args.trades, names, args.rate)
    stages = _Stages({})
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, records, args.batch, stages)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    started = time.process_time()
    run(records, args.batch, stages)
    total = time.process_time() - started
    print(
        f"{args.trades:,} trades, {len(names):,} tickers ({args.density:g} trades/ticker/s): "
        f"{stages.results:,} window results, {total:.2f} s = {args.trades / total:,.0f} trades/s"
        f", {stages.results / total:,.0f} results/s"
    )
    for stage, seconds in stages.seconds.items():
        per = seconds / stages.results * 1e6 if stages.results else 0.0
        print(f"  {stage:15s} {seconds:6.2f} s  {per:6.2f} us/result")


if __name__ == "__main__":
    main()
