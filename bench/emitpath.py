"""``python -m bench.emitpath``: the worker's emit path in one process, without a broker.

Trades of one density are folded into a :class:`PartitionState` in batches as the worker gets
them, and every window they close goes through the code the worker runs for it: ``close_windows``
with the windowed keys and JSON values, and aiokafka's record-batch builder (what
:class:`tradestats.service.output.Output` fills). Each stage is timed separately, per window
result, with the garbage collector set as the tree's worker sets it; ``--profile`` prints a
cProfile summary of the whole loop instead. Kafka's round trips are not in it: that is what the
sweep of ``python -m bench`` measures.

``--against REV`` measures another revision of ``tradestats`` beside this one, in one session:
it checks REV out into a temporary git worktree, runs each density in a fresh interpreter per
tree, alternating trees, ``--repeat`` times, and keeps each stage's least CPU time (the least
disturbed by the other jobs on a shared machine). ``--json`` writes that comparison for the
report (``bench/results/emitpath.json`` is what ``python -m bench`` puts in
``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["main"]

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The batch size of trees before ``BATCH_BYTES_MAX``: their producer's ``max_batch_size``.
_EARLIER_BATCH_BYTES = 256 * 1024
_CHECKPOINT_EVERY = 6  # batches: about one poll of 20,000 records, as often as the worker
STAGES = ("process", "close and encode", "batch append", "checkpoint")


class _Record(NamedTuple):
    """A consumed record, as the state reads it."""

    offset: int
    timestamp: int
    key: bytes
    value: bytes


class _Stages:
    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.results = 0

    def timed(self, stage: str, call: Callable[[], Any]) -> Any:
        started = time.process_time()
        value = call()
        self.seconds[stage] += time.process_time() - started
        return value


def _closer() -> tuple[Callable[[Any], list[Any]], Callable[[list[Any]], list[Any]]]:
    """The tree's window close, ``state -> results``, and how its pipeline turns the results
    into the output records it hands to the producer (timed with the batch append).

    Since ``result_timestamp`` exists, a result is its output record. Before, the pipeline
    made one of each result (ticker, end, average price, key, value), whose key and value were
    encoded as they were yielded (``encode_value_head``), after the close in one batch
    (``encode_results``, since 215d57a) or one by one (in ``Pipeline._send_results``)."""
    from tradestats.core import codec

    if hasattr(codec, "result_timestamp"):
        return lambda state: list(state.close_windows()), lambda results: results

    def as_records(
        ends: Iterable[int], keys: Iterable[bytes], values: Iterable[bytes]
    ) -> list[Any]:
        return [
            (key, value, end - 1, None) for end, key, value in zip(ends, keys, values, strict=True)
        ]

    if hasattr(codec, "encode_value_head"):

        def records_of(results: list[Any]) -> list[Any]:
            return as_records(*zip(*((r[1], r[3], r[4]) for r in results), strict=True))

        return lambda state: list(state.close_windows()), records_of
    batch_encoder = getattr(codec, "encode_results", None)

    def then_encoded(state: Any) -> list[Any]:
        results = list(state.close_windows())
        if batch_encoder is not None:
            keys, values = batch_encoder(results)
        else:
            keys = [codec.encode_windowed_key(s.ticker, s.window_start) for s in results]
            values = [codec.encode_window_stats(s) for s in results]  # type: ignore[attr-defined]
        return list(zip((s.window_end for s in results), keys, values, strict=True))

    return then_encoded, lambda encoded: as_records(*zip(*encoded, strict=True))


def _records(trades: int, tickers: int, rate: float) -> list[_Record]:
    from tradestats.core.trades import encode_trade
    from tradestats.loadgen import TradeGenerator
    from tradestats.loadgen import tickers as ticker_names

    generated = islice(iter(TradeGenerator(ticker_names(tickers), seed=42)), trades)
    return [
        _Record(i, 1_000_000 + i * 1000 // int(rate), t.ticker.encode(), encode_trade(t))
        for i, t in enumerate(generated)
    ]


def _batch_filler() -> Callable[[Any, Sequence[Any], int], int]:
    """The tree's way of filling a record batch, ``(builder, records, start) -> first record
    left out``: ``fill_batch`` where the tree has one, else aiokafka's per-record ``append``
    wrapper, which is what ``Output.send`` called."""
    try:
        from tradestats.service.output import fill_batch
    except ImportError:
        return _append_per_record
    return fill_batch


def _batch_bytes() -> int:
    """The size of the record batches the tree builds."""
    from tradestats.service import output

    return int(getattr(output, "BATCH_BYTES_MAX", _EARLIER_BATCH_BYTES))


def _append_per_record(builder: Any, records: Sequence[Any], start: int) -> int:
    for index in range(start, len(records)):
        key, value, timestamp, _ = records[index]
        if builder.append(key=key, value=value, timestamp=timestamp, headers=[]) is None:
            return index
    return len(records)


def _append_all(
    new_batch: Callable[[], Any],
    fill: Callable[[Any, Sequence[Any], int], int],
    records_of: Callable[[list[Any]], list[Any]],
    results: list[Any],
) -> int:
    """The output records of the results (as the tree's pipeline makes them) appended to
    record batches; returns how many batches they took."""
    records = records_of(results)
    batches = 1
    done = fill(new_batch(), records, 0)
    while done < len(records):
        done = fill(new_batch(), records, done)
        batches += 1
    return batches


def _worker_collector() -> None:
    """Set the cyclic garbage collector's thresholds the tree's worker sets, if it sets any:
    state is made of tracked objects, and at Python's defaults collections cost the stages
    more than they cost the worker (the density 1 point's process() 40% more)."""
    from tradestats.service import worker

    thresholds = getattr(worker, "_GC_THRESHOLDS", None)
    if thresholds is not None:
        gc.set_threshold(*thresholds)


def run(records: list[_Record], batch: int, stages: _Stages) -> None:
    from aiokafka.producer.message_accumulator import BatchBuilder

    from tradestats.core.partition import PartitionState
    from tradestats.core.windows import WindowSpec

    _worker_collector()
    close, records_of = _closer()
    fill = _batch_filler()
    new_batch = partial(BatchBuilder, _batch_bytes(), 0)  # uncompressed, as the worker's
    state = PartitionState(WindowSpec(5000, 1000))
    for begin in range(0, len(records), batch):
        chunk = records[begin : begin + batch]
        stages.timed("process", partial(state.process, chunk))
        closed = stages.timed("close and encode", partial(close, state))
        if closed:
            append = partial(_append_all, new_batch, fill, records_of, closed)
            stages.timed("batch append", append)
            stages.results += len(closed)
        if begin // batch % _CHECKPOINT_EVERY == _CHECKPOINT_EVERY - 1:
            stages.timed("checkpoint", state.checkpoint)


def tickers_for(density: float, rate: float) -> int:
    return max(1, round(rate / density))


def measure(density: float, rate: float, trades: int, batch: int) -> dict[str, Any]:
    """One density in this interpreter: CPU seconds per stage and the results emitted."""
    tickers = tickers_for(density, rate)
    records = _records(trades, tickers, rate)
    stages = _Stages()
    run(records, batch, stages)
    return {"tickers": tickers, "results": stages.results, "seconds": stages.seconds}


def _print_stages(label: str, trades: int, measured: dict[str, Any]) -> None:
    results, seconds = measured["results"], measured["seconds"]
    total = sum(seconds.values())
    print(
        f"{label}: {trades:,} trades, {measured['tickers']:,} tickers: {results:,} window "
        f"results, {total:.2f} CPU s = {trades / total:,.0f} trades/s, "
        f"{results / total:,.0f} results/s"
    )
    for stage, spent in seconds.items():
        per = spent / results * 1e6 if results else 0.0
        print(f"  {stage:17s} {spent:6.2f} s  {per:6.2f} us/result")


# --- before and after --------------------------------------------------------------------


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def _measure_in(tree: Path, args: argparse.Namespace, density: float) -> dict[str, Any]:
    """One density measured in a fresh interpreter importing ``tradestats`` from ``tree``."""
    command = [
        sys.executable,
        "-m",
        "bench.emitpath",
        "--tree",
        str(tree),
        "--child",
        f"--density={density}",
        f"--rate={args.rate}",
        f"--trades={args.trades}",
        f"--batch={args.batch}",
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def _least(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {stage: min(run["seconds"][stage] for run in runs) for stage in STAGES}


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Every density on REV's tree and on this one, alternating, ``--repeat`` times each."""
    before_commit = _git("rev-parse", args.against)
    after_commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "tradestats/core", "tradestats/loadgen.py"))
    points = []
    with tempfile.TemporaryDirectory(prefix="emitpath-") as scratch:
        before_tree = Path(scratch) / "before"
        _git("worktree", "add", "--detach", str(before_tree), before_commit)
        try:
            for density in args.densities:
                runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
                for repeat in range(args.repeat):
                    for side, tree in (("before", before_tree), ("after", REPO_ROOT)):
                        runs[side].append(_measure_in(tree, args, density))
                        print(f"density {density:g}, {side}, run {repeat + 1}/{args.repeat}")
                first = runs["after"][0]
                points.append(
                    {
                        "density": density,
                        "tickers": first["tickers"],
                        "results": first["results"],
                        "before": _least(runs["before"]),
                        "after": _least(runs["after"]),
                    }
                )
        finally:
            _git("worktree", "remove", "--force", str(before_tree))
    return {
        "command": " ".join(["python -m bench.emitpath", *sys.argv[1:]]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "before": {"rev": args.against, "commit": before_commit},
        "after": {
            "rev": "HEAD" + (" (with uncommitted changes)" if dirty else ""),
            "commit": after_commit,
        },
        "trades": args.trades,
        "rate": args.rate,
        "batch": args.batch,
        "repeat": args.repeat,
        "points": points,
    }


def _print_comparison(data: dict[str, Any]) -> None:
    for point in data["points"]:
        results = point["results"]
        print(f"density {point['density']:g}: {results:,} window results, us per result")
        for stage in (*STAGES, "total"):
            before, after = (
                sum(point[side].values()) if stage == "total" else point[side][stage]
                for side in ("before", "after")
            )
            print(
                f"  {stage:17s} before {before / results * 1e6:7.2f}  "
                f"after {after / results * 1e6:7.2f}"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.emitpath", description=__doc__)
    parser.add_argument("--density", type=float, default=1.0, help="trades / ticker / s")
    parser.add_argument(
        "--densities", default="0.1,1,10,100", help="with --against: the densities compared"
    )
    parser.add_argument("--rate", type=float, default=10_000.0, help="trades / s of event time")
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=3_333, help="records per batch event")
    parser.add_argument("--profile", action="store_true", help="cProfile summary instead")
    parser.add_argument("--against", help="a git revision to measure beside this tree")
    parser.add_argument("--repeat", type=int, default=3, help="with --against: runs per tree")
    parser.add_argument("--json", type=Path, help="with --against: write the comparison here")
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)  # import tradestats from
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # print JSON
    args = parser.parse_args(argv)
    if args.tree is not None:
        if "tradestats" in sys.modules:
            raise RuntimeError("tradestats imported before --tree took effect")
        sys.path.insert(0, str(args.tree.resolve()))
    if args.against:
        args.densities = [float(part) for part in args.densities.split(",") if part.strip()]
        data = compare(args)
        _print_comparison(data)
        if args.json:
            args.json.write_text(json.dumps(data, indent=2) + "\n")
        return
    if args.profile:
        records = _records(args.trades, tickers_for(args.density, args.rate), args.rate)
        profiler = cProfile.Profile()
        profiler.runcall(run, records, args.batch, _Stages())
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    measured = measure(args.density, args.rate, args.trades, args.batch)
    if args.child:
        print(json.dumps(measured))
    else:
        _print_stages(f"{args.density:g} trades/ticker/s", args.trades, measured)


if __name__ == "__main__":
    main()
