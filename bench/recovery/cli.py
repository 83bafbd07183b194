"""Command line: measure (full or ``--quick``), save raw results, write the report and plots.

The full run writes ``docs/recovery.md`` and ``docs/recovery-*.png``; ``--quick`` writes next to
its raw results (under ``--work-dir``) unless ``--out`` says otherwise, so a quick check never
overwrites the published report.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from bench.cli import default_cache_dir
from bench.machine import describe_machine, load_average
from bench.process import run_until_sigterm
from bench.progress import Progress
from bench.recovery.broker import BrokerHandle
from bench.recovery.kstreams import measure_kstreams
from bench.recovery.plan import (
    DEFAULT_SEGMENT_BYTES,
    FULL,
    QUICK,
    Plan,
    format_bytes,
    format_count,
    parse_bytes,
    parse_count,
)
from bench.recovery.plots import write_plots
from bench.recovery.report import render_report
from bench.recovery.results import (
    Baseline,
    RunResult,
    SegmentResult,
    SizeResult,
    load_results,
    save_results,
)
from bench.recovery.scenarios import StateRun

__all__ = ["main"]

_BROKER_STATE_DIR = Path(".local/bench-recovery-kafka")
_WORK_DIR = Path(".local/bench-recovery")
_DOCS = Path("docs")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.recovery",
        description="Measure tradestats recovery: warm, cold and standby restarts at several "
        "state sizes, and changelog segment sizes (run from the repository root).",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks the harness)")
    parser.add_argument("--sizes", help="stored aggregates, e.g. 10k,100k,1M")
    parser.add_argument("--segment-sizes", help="changelog segment.bytes, e.g. 1MiB,8MiB,1GiB")
    parser.add_argument("--segment-state", help="aggregates for the segment runs, e.g. 1M")
    parser.add_argument("--no-segments", action="store_true", help="skip the segment runs")
    parser.add_argument("--no-standby", action="store_true", help="skip the standby takeover")
    parser.add_argument(
        "--no-kstreams", action="store_true", help="skip Kafka Streams restoring the same state"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache_dir(),
        help="where the Kafka Streams jar is built (shared with python -m bench)",
    )
    parser.add_argument("--panes", type=int, help="live 1 s panes per ticker (1..10)")
    parser.add_argument("--partitions", type=int, help="input and changelog partitions")
    parser.add_argument("--repeat", type=int, help="measurements of each restart kind")
    parser.add_argument("--session-timeout-ms", type=int, help="KAFKA_SESSION_TIMEOUT_MS")
    parser.add_argument("--out", type=Path, help="report and plots directory")
    parser.add_argument("--work-dir", type=Path, default=_WORK_DIR, help="logs, raw results")
    parser.add_argument("--results", type=Path, help="raw results file (JSON)")
    parser.add_argument(
        "--broker-log-dir",
        type=Path,
        help="log.dirs of an external broker on this machine (to see the cleaner finish)",
    )
    parser.add_argument("--keep-broker", action="store_true", help="leave our broker running")
    parser.add_argument("--keep-topics", action="store_true", help="keep topics and pod data")
    parser.add_argument(
        "--from-results", type=Path, help="only re-render the report from raw results"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="raw results of another run (e.g. the code before a change) to show side by side; "
        "kept in this run's results",
    )
    parser.add_argument(
        "--baseline-label", help="what the baseline measured (default: its command)"
    )
    return parser


def _baseline(args: argparse.Namespace) -> Baseline | None:
    if args.baseline is None:
        return None
    other = load_results(args.baseline)
    return Baseline(
        label=args.baseline_label or other.command,
        started=other.started,
        finished=other.finished,
        command=other.command,
        sizes=other.sizes,
        segments=other.segments,
    )


def _split(text: str | None, parse: Callable[[str], int]) -> tuple[int, ...] | None:
    return tuple(parse(x) for x in text.split(",")) if text else None


def _plan(args: argparse.Namespace) -> Plan:
    base = QUICK if args.quick else FULL
    split = _split
    return base.with_overrides(
        sizes=split(args.sizes, parse_count),
        segment_sizes=() if args.no_segments else split(args.segment_sizes, parse_bytes),
        segment_state=parse_count(args.segment_state) if args.segment_state else None,
        panes=args.panes,
        partitions=args.partitions,
        repeat=args.repeat,
        session_timeout_ms=args.session_timeout_ms,
        standby=False if args.no_standby else None,
        kstreams=False if args.no_kstreams else None,
    )


async def _measure(
    plan: Plan,
    broker: BrokerHandle,
    run: RunResult,
    root: Path,
    results: Path,
    keep: bool,
    cache_dir: Path,
    progress: Progress,
) -> None:
    """Run every measurement of the plan, saving the results after each state."""
    for target in plan.sizes:
        progress.say(f"=== state size {format_count(target)} aggregates")
        state_run = StateRun(
            broker, plan, target, DEFAULT_SEGMENT_BYTES, root / f"size-{target}", progress
        )
        kstreams = None
        try:
            state = await state_run.build()
            restarts = state_run.restarts()
            takeover = state_run.takeover() if plan.standby else None
            if plan.kstreams:
                state_run.stop_workers()  # nothing else runs while Kafka Streams is measured
                kstreams = await measure_kstreams(
                    broker,
                    plan,
                    state_run.topics.trades,
                    f"{state_run.topics.app_id}-ks",
                    root / f"size-{target}" / "kstreams",
                    cache_dir,
                    progress,
                    state_run.label,
                    keep,
                )
        finally:
            await state_run.close(keep)
        run.sizes.append(SizeResult(state, restarts, takeover, kstreams))
        save_results(run, results)
    for segment in plan.segment_sizes:
        shared = next(
            (
                s
                for s in run.sizes
                if segment == DEFAULT_SEGMENT_BYTES
                and s.state.target_aggregates == plan.segment_state
            ),
            None,
        )
        if shared is not None:
            run.segments.append(SegmentResult(segment, shared.state, shared.of_kind("cold"), True))
            continue
        progress.say(
            f"=== segment.bytes {format_bytes(segment)}, "
            f"{format_count(plan.segment_state)} aggregates"
        )
        state_run = StateRun(
            broker, plan, plan.segment_state, segment, root / f"segment-{segment}", progress
        )
        try:
            state = await state_run.build()
            cold = state_run.restarts(("cold",))
        finally:
            await state_run.close(keep)
        run.segments.append(SegmentResult(segment, state, cold))
        save_results(run, results)


def _render(run: RunResult, out: Path, command: str) -> Path:
    plots = write_plots(run, out)
    report = out / "recovery.md"
    report.write_text(render_report(run, command, plots))
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    command = shlex.join([".venv/bin/python", "-m", "bench.recovery", *argv])
    if args.from_results:
        run = load_results(args.from_results)
        if args.baseline is not None:
            run.baseline = _baseline(args)
            save_results(run, args.from_results)
        out = args.out or (args.from_results.parent if run.quick else _DOCS)
        print(f"wrote {_render(run, out, run.command)}")
        return 0
    plan = _plan(args)
    progress = Progress()
    started = datetime.now().astimezone()
    root = args.work_dir / started.strftime("%Y%m%d-%H%M%S")
    results = args.results or root / "results.json"
    out = args.out or (root if args.quick else _DOCS)
    progress.say(f"plan: {plan}")
    progress.say(f"worker logs and raw results: {root}")
    broker = BrokerHandle.open(
        external=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
        state_dir=_BROKER_STATE_DIR,
        log_dir=args.broker_log_dir,
        progress=progress,
    )
    run = RunResult(
        started=started.isoformat(timespec="seconds"),
        finished="",
        duration_seconds=0.0,
        command=command,
        quick=args.quick,
        machine=describe_machine(),
        plan=vars(plan) | {"sizes": list(plan.sizes), "segment_sizes": list(plan.segment_sizes)},
        broker=broker.description,
        baseline=_baseline(args),
    )
    clock = time.monotonic()
    try:
        run_until_sigterm(
            _measure(plan, broker, run, root, results, args.keep_topics, args.cache_dir, progress)
        )
    finally:
        broker.close(keep=args.keep_broker)
    run.finished = datetime.now().astimezone().isoformat(timespec="seconds")
    run.duration_seconds = time.monotonic() - clock
    run.machine["load_average_at_end"] = load_average()
    save_results(run, results)
    report = _render(run, out, command)
    progress.say(f"done in {run.duration_seconds / 60:.1f} min: {report}, raw results {results}")
    return 0
