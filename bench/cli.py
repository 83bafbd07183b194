"""``python -m bench``: a sweep over trade densities, every contender on the same input at each
point, then each contender's emit latency; writes the report.

A density is trades per ticker per second of event time. Every point has the same event rate;
the number of tickers the trades are spread over is event rate / density, and with it the
window results per trade change: about 5 at 0.1 (each trade opens five windows of its own), 1
at 1, 0.01 at 100. A point's trade count is its own (``--trades``, one number or one per
point): a thin point costs every contender many times more per trade, so the full sweep gives
the thin points fewer trades: about 12 minutes for every contender but the textbook faust
version, which takes about 90 minutes more (some 500 trades/s at every density;
``--only a,c,d,d2,e`` leaves it out).

The broker is the project's own (``devtools.kafka.LocalKafka`` under
``.local/bench-kafka``, reused when already running, stopped at the end when this run started
it) unless ``KAFKA_BOOTSTRAP_SERVERS`` or ``--bootstrap`` names another. Builds (the Kafka
Streams jar, the Quix Streams environment) happen before anything is timed and are cached under
``~/.cache/tradestats/bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.contenders.base import REPO_ROOT, Contender, Emission
from bench.contenders.registry import CEILING, TRADESTATS, all_contenders, select
from bench.dataset import Dataset, DatasetSpec, produce_dataset
from bench.harness import (
    OUTPUT_TOPIC_CONFIGS,
    BenchSettings,
    Context,
    result_of,
    run_throughput,
)
from bench.kafkaio import KafkaOps
from bench.latency import run_latency
from bench.machine import describe_machine, load_average
from bench.process import run_until_sigterm
from bench.progress import Progress
from bench.recovery.broker import BrokerHandle
from bench.report import write_report
from bench.results import ContenderResult, RunResult, SweepPoint, combine_rounds

__all__ = ["main", "run", "run_order", "tickers_for"]

QUICK = {
    "trades": "5000",
    "densities": "0.1,100",
    "event_rate": 500.0,
    "sample": 0,
    "latency_rate": 200.0,
    "latency_seconds": 10.0,
    "latency_warmup": 0.5,
    "timeout": 300.0,
}
FULL = {
    "trades": "200000,300000,2000000,3000000",
    "densities": "0.1,1,10,100",
    "event_rate": 10_000.0,
    "sample": 10,
    "latency_rate": 200.0,
    "latency_seconds": 30.0,
    "latency_warmup": 5.0,
    "timeout": 3600.0,
}


def default_cache_dir() -> Path:
    env = os.environ.get("TRADESTATS_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tradestats" / "bench"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark tradestats against faust, Quix Streams, Kafka Streams and a "
        "bare consumer on the same input, broker and machine.",
    )
    parser.add_argument("--quick", action="store_true", help="small, fast form (CI)")
    parser.add_argument(
        "--trades",
        help="input trades per point: one number for all, or one per density "
        "(default 200000,300000,2000000,3000000)",
    )
    parser.add_argument(
        "--densities",
        help="the sweep's points: trades per ticker per second of event time, comma-separated "
        "(default 0.1,1,10,100)",
    )
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--event-rate", type=float, help="trades per second of event time (default 10,000)"
    )
    parser.add_argument(
        "--latency-tickers", type=int, default=100, help="tickers of the latency phase"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--sample", type=int, help="tickers whose windows are checked (0 = all; default 10)"
    )
    parser.add_argument("--only", help="contenders to run: keys or names, e.g. a,b,e")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="runs of every contender per point, in turn, tradestats and the bare consumer "
        "side by side, every other round in reverse order (see run_order): the report gives "
        "each contender's median round, and ratios as the median of the rounds' ratios "
        "(default 1)",
    )
    parser.add_argument("--latency-rate", type=float, help="fixed input rate, trades/s")
    parser.add_argument("--latency-seconds", type=float, help="duration of the latency phase")
    parser.add_argument("--latency-warmup", type=float, help="seconds not measured at start")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency phase")
    parser.add_argument("--timeout", type=float, help="max seconds per contender run")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: own broker)")
    parser.add_argument("--report", type=Path, help="Markdown report path")
    parser.add_argument("--json", type=Path, help="results JSON path")
    parser.add_argument("--plots-dir", type=Path, help="where the PNG plots go")
    parser.add_argument("--work-dir", type=Path, help="logs and state (default .local/bench)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="build cache")
    parser.add_argument("--quix-python", type=Path, help="a Python that has quixstreams")
    parser.add_argument("--keep-topics", action="store_true", help="keep the run's topics")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: write the report and plots again from --json's results (e.g. "
        "after python -m bench.emitpath, whose table the full report includes)",
    )
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    run_dir = REPO_ROOT / ".local" / "bench" / ("quick" if args.quick else "full")
    args.work_dir = args.work_dir or run_dir
    if args.quick:
        args.report = args.report or args.work_dir / "benchmarks.md"
        args.json = args.json or args.work_dir / "benchmarks.json"
        args.plots_dir = args.plots_dir or args.work_dir
        args.emit_profile = None  # the emit-path comparison belongs to the full report only
    else:
        args.report = args.report or REPO_ROOT / "docs" / "benchmarks.md"
        args.json = args.json or REPO_ROOT / "bench" / "results" / "benchmarks.json"
        args.plots_dir = args.plots_dir or REPO_ROOT / "docs"
        args.emit_profile = REPO_ROOT / "bench" / "results" / "emitpath.json"
    args.cache_dir = args.cache_dir or default_cache_dir()
    densities = [float(part) for part in args.densities.split(",") if part.strip()]
    trades = [int(part) for part in args.trades.split(",") if part.strip()]
    if not densities or min(densities) <= 0 or len(set(densities)) < len(densities):
        parser.error("--densities: distinct positive numbers, e.g. 0.1,1,10,100")
    if len(trades) == 1:
        trades *= len(densities)
    if len(trades) != len(densities) or min(trades) <= 0:
        parser.error("--trades: one positive number, or one per density")
    if args.rounds < 1:
        parser.error("--rounds: a positive number")
    points = sorted(zip(densities, trades, strict=True))
    args.densities = [density for density, _ in points]
    args.trades = [count for _, count in points]
    return args


def tickers_for(density: float, event_rate: float) -> int:
    """Tickers that make ``event_rate`` trades per second ``density`` trades per ticker."""
    return max(1, round(event_rate / density))


async def run(args: argparse.Namespace, progress: Progress) -> RunResult:
    started = time.monotonic()
    contenders = select(all_contenders(args.quix_python), args.only)
    settings = BenchSettings(
        trades=args.trades,
        densities=args.densities,
        partitions=args.partitions,
        event_rate=args.event_rate,
        seed=args.seed,
        sample=args.sample,
        latency_tickers=args.latency_tickers,
        latency_rate=args.latency_rate,
        latency_seconds=args.latency_seconds,
        latency_warmup=args.latency_warmup,
        quiet_seconds=3.0,
        timeout=args.timeout,
        stall_seconds=120.0,
        skip_latency=args.no_latency,
        rounds=args.rounds,
    )
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    for contender in contenders:
        contender.prepare(args.cache_dir, progress.say)
    broker = BrokerHandle.open(
        external=args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
        state_dir=REPO_ROOT / ".local" / "bench-kafka",
        log_dir=None,
        progress=progress,
    )
    try:
        return await _run_on(args, progress, contenders, settings, broker.bootstrap, started)
    finally:
        broker.close(keep=False)


async def _run_on(
    args: argparse.Namespace,
    progress: Progress,
    contenders: list[Contender],
    settings: BenchSettings,
    bootstrap: str,
    started: float,
) -> RunResult:
    """The run on a broker at ``bootstrap``: every point of the sweep, then the latencies."""
    run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:4]
    result = RunResult(
        command=" ".join(["python -m bench", *map(shlex.quote, sys.argv[1:])]),
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=describe_machine(),
        settings={
            key: value
            for key, value in settings.__dict__.items()
            if key not in ("skip_latency", "timeout", "stall_seconds")
        },
    )
    ops = KafkaOps(bootstrap)
    await ops.start()
    ctx = Context(settings, ops, run_id, args.work_dir / run_id, progress)
    try:
        await ops.create_topics(
            [t for c in contenders for t in ctx.latency_topics(c)], settings.partitions
        )
        for index, density in enumerate(settings.densities):
            point = await _run_point(ctx, contenders, index, density)
            result.points.append(point)
            if not args.keep_topics:  # the thin points' topics take gigabytes
                mine = [t for t in await ops.list_topics() if f"{run_id}-" in t]
                await ops.delete_topics([t for t in mine if f"-p{index}-" in t])
        if not settings.skip_latency:
            for contender in contenders:
                if contender.emission is not Emission.NONE:
                    result.latency.append(await _run_latency(ctx, contender))
    finally:
        if not args.keep_topics:
            mine = [t for t in await ops.list_topics() if run_id in t]
            await ops.delete_topics(mine)
        await ops.close()
    result.seconds = time.monotonic() - started
    result.load_average_at_end = load_average()
    return result


async def _run_point(
    ctx: Context, contenders: list[Contender], index: int, density: float
) -> SweepPoint:
    """Produce one density's input, then run every contender on it, ``settings.rounds``
    times in turn (see :func:`run_order`)."""
    settings, progress = ctx.settings, ctx.progress
    tickers = tickers_for(density, settings.event_rate)
    trades = settings.trades[index]
    label = f"point {index + 1}/{len(settings.densities)}: {density:g} trades/ticker/s"
    progress.say(f"{label}, {trades:,} trades over {tickers:,} tickers")
    topic = f"bench-{ctx.run_id}-p{index}-trades"
    rounds = settings.rounds
    # A round's phase keeps the point's "-p{index}-" in its topics' names (see _run_on).
    phases = [f"p{index}"] if rounds == 1 else [f"p{index}-r{n}" for n in range(1, rounds + 1)]
    # Every topic of the point is created now, long before its contender starts: a topic
    # created just before a producer writes to it can still answer "not leader".
    await ctx.ops.create_topics([topic], settings.partitions)
    await ctx.ops.create_topics(
        [ctx.run_spec(c, phase, topic).output_topic for c in contenders for phase in phases],
        settings.partitions,
        OUTPUT_TOPIC_CONFIGS,
    )
    spec = DatasetSpec(trades, tickers, settings.partitions, settings.event_rate, settings.seed)
    produced = 0

    def on_progress(count: int) -> None:
        nonlocal produced
        produced += count
        progress.status(f"{label}: producing the input, {produced:,}/{spec.trades:,} trades")

    dataset = await produce_dataset(
        ctx.bootstrap, topic, spec, sample=settings.sample, on_progress=on_progress
    )
    progress.say(
        f"{label}: {dataset.records:,} records ({dataset.bytes / 1e6:.1f} MB), "
        f"{dataset.windows:,} windows, {spec.span_ms / 1000:.0f} s of event time, "
        f"produced in {dataset.seconds:.1f} s"
    )
    point = SweepPoint(
        density,
        tickers,
        {
            "topic": topic,
            "records": dataset.records,
            "bytes": dataset.bytes,
            "windows": dataset.windows,
            "event_seconds": spec.span_ms / 1000,
            "sample_tickers": len(dataset.sample_tickers),
            "closing_tickers": dataset.closing,
        },
    )
    runs: dict[str, list[ContenderResult]] = {c.key: [] for c in contenders}
    for number, phase in enumerate(phases, 1):
        where = label if rounds == 1 else f"{label}, round {number}/{rounds}"
        for contender in run_order(contenders, number):
            runs[contender.key].append(await _run_contender(ctx, contender, dataset, phase, where))
    point.contenders = [combine_rounds(runs[c.key]) for c in contenders]
    return point


def run_order(contenders: list[Contender], number: int) -> list[Contender]:
    """The order of round ``number`` (from 1): tradestats and the bare consumer first, side by
    side, then the others; every even round the reverse.

    The machine's speed drifts over minutes (neighbours come and go), and one round of the
    slow peers takes several: the ratio to the ceiling compares two runs only when they run
    next to each other, and reversing every other round cancels a steady drift across a
    pair (a e ... e a ...). In report order, the bare consumer ran after every peer, six
    minutes after tradestats, and a busy spell between them set the ratio."""
    paired = [c for c in contenders if c.key == TRADESTATS] + [
        c for c in contenders if c.key == CEILING
    ]
    order = paired + [c for c in contenders if c not in paired]
    return order if number % 2 else order[::-1]


async def _run_contender(
    ctx: Context, contender: Contender, dataset: Dataset, phase: str, label: str
) -> ContenderResult:
    """One throughput run; an unexpected error fails the contender, not the run."""
    try:
        return await run_throughput(ctx, contender, dataset, phase, label)
    except Exception as exc:
        return _harness_error(ctx, result_of(contender), exc)


async def _run_latency(ctx: Context, contender: Contender) -> ContenderResult:
    """The latency phase of one contender; an unexpected error fails it, not the run."""
    outcome = result_of(contender)
    try:
        await run_latency(ctx, contender, outcome)
    except Exception as exc:
        _harness_error(ctx, outcome, exc)
    return outcome


def _harness_error(ctx: Context, outcome: ContenderResult, exc: Exception) -> ContenderResult:
    """Record an unexpected error of the harness (call it in the ``except`` block) on
    ``outcome``, which it fails."""
    ctx.progress.say(f"[{outcome.key} {outcome.name}] harness error: {exc!r}")
    outcome.errors.append(f"harness error: {traceback.format_exc()}")
    return outcome


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    progress = Progress()
    if args.report_only:
        result = RunResult.read(args.json)
    else:
        result = run_until_sigterm(run(args, progress))
        result.write(args.json)
    profile = args.emit_profile
    emit_profile = json.loads(profile.read_text()) if profile and profile.exists() else None
    write_report(result, args.report, args.plots_dir, emit_profile)
    progress.say(f"results: {args.json}\nreport: {args.report}")
    progress.say(f"benchmark {'passed' if result.ok else 'FAILED'} in {result.seconds:.0f} s")
    sys.exit(0 if result.ok else 1)
