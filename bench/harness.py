"""Runs the contenders one after another on the same input and measures each.

Throughput phase, per contender: a fresh consumer group / application id reads the
pre-produced topic from the beginning. The clock starts when the contender consumes its first
record (so start-up, JVM warm-up of class loading and group joins are not counted; they are
reported as start-up seconds) and stops when it is *done*: its group's committed offsets reach
the topic's end offsets and its output topic has stopped growing (no new record for
``quiet_seconds``). The done time is the later of the commit reaching the end and the
log-append time of the last window result of a regular ticker (the closing tickers' windows,
which only a wall-clock idle close emits, do not count: see :mod:`bench.correctness`). Every
contender commits every second, so the commit adds the same delay to all. CPU seconds are the
process's over that interval; peak RSS is its high-water mark.

Then the contender is stopped, its output checked against the oracle (the same read finds the
last result's append time, :mod:`bench.correctness`) and its changelog topics' records counted.
"""

from __future__ import annotations

import asyncio
import bisect
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.contenders.base import Contender, Emission, RunSpec
from bench.correctness import check_output
from bench.dataset import Dataset
from bench.kafkaio import KafkaOps
from bench.process import ContenderProcess
from bench.progress import Progress
from bench.results import ContenderResult, Throughput

__all__ = [
    "OUTPUT_TOPIC_CONFIGS",
    "BenchSettings",
    "ContenderFailed",
    "Context",
    "free_port",
    "result_of",
    "run_throughput",
]

_POLL_SECONDS = 0.25
#: The throughput phase's output topics: the broker stamps each record with its append time.
OUTPUT_TOPIC_CONFIGS = {"message.timestamp.type": "LogAppendTime"}


class ContenderFailed(Exception):
    """The contender exited, stalled or timed out; the message has its log's tail."""


@dataclass(frozen=True)
class BenchSettings:
    trades: list[int]
    """Per point of the sweep (one per density)."""
    densities: list[float]
    """Trades per ticker per second of event time, one point each."""
    partitions: int
    event_rate: float
    seed: int
    sample: int
    latency_tickers: int
    latency_rate: float
    latency_seconds: float
    latency_warmup: float
    quiet_seconds: float
    timeout: float
    stall_seconds: float
    skip_latency: bool
    rounds: int = 1
    """Runs of every contender per point, interleaved (see ``python -m bench --rounds``)."""


@dataclass
class Context:
    settings: BenchSettings
    ops: KafkaOps
    run_id: str
    work_dir: Path
    progress: Progress

    @property
    def bootstrap(self) -> str:
        return self.ops.bootstrap

    def run_spec(self, contender: Contender, phase: str, input_topic: str) -> RunSpec:
        app_id = f"bench-{self.run_id}-{contender.name}-{phase}"
        return RunSpec(
            bootstrap=self.bootstrap,
            input_topic=input_topic,
            output_topic=f"{app_id}-out",
            app_id=app_id,
            work_dir=self.work_dir / contender.name / phase,
            partitions=self.settings.partitions,
            web_port=free_port(),
        )

    def latency_spec(self, contender: Contender) -> RunSpec:
        """The latency phase's run: its own, fresh input topic."""
        run = self.run_spec(contender, "latency", "")
        return replace(run, input_topic=f"{run.app_id}-in")

    def latency_topics(self, contender: Contender) -> list[str]:
        """The latency phase's topics (created up front, see cli)."""
        latency = self.latency_spec(contender)
        return [latency.input_topic, latency.output_topic]

    def process(self, contender: Contender, run: RunSpec) -> ContenderProcess:
        return ContenderProcess(
            contender.name,
            contender.launch(run),
            log_path=run.work_dir / "contender.log",
            events_path=run.work_dir / "events.txt",
        )


def result_of(contender: Contender) -> ContenderResult:
    """An empty result for ``contender``, for a run or phase to fill in."""
    return ContenderResult(contender.key, contender.name, contender.title, contender.emission)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _CpuTrace:
    """(wall time, CPU seconds) samples, to read the CPU used between two instants."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.cpu: list[float] = []

    def add(self, at: float, cpu: float) -> None:
        self.times.append(at)
        self.cpu.append(cpu)

    def at(self, instant: float) -> float:
        """CPU seconds at ``instant``, interpolated linearly between the samples around it."""
        right = bisect.bisect_left(self.times, instant)
        if right == 0:
            return self.cpu[0]
        if right == len(self.times):
            return self.cpu[-1]
        t0, t1 = self.times[right - 1], self.times[right]
        c0, c1 = self.cpu[right - 1], self.cpu[right]
        return c0 + (c1 - c0) * (instant - t0) / (t1 - t0) if t1 > t0 else c1


async def run_throughput(
    ctx: Context, contender: Contender, dataset: Dataset, phase: str, point: str
) -> ContenderResult:
    """Run one contender over the whole pre-produced input of a sweep point (``phase`` names
    its topics and groups); measure and check it."""
    result = result_of(contender)
    run = ctx.run_spec(contender, phase, dataset.topic)
    await ctx.ops.create_topics([run.output_topic], ctx.settings.partitions, OUTPUT_TOPIC_CONFIGS)
    proc = ctx.process(contender, run).start()
    label = f"[{point}] [{contender.key} {contender.name}]"
    try:
        measured = await _measure(ctx, contender, run, proc, dataset, label)
    except ContenderFailed as exc:
        result.errors.append(f"throughput: {exc}")
        ctx.progress.say(f"{label} FAILED: {exc}")
        return result
    finally:
        proc.stop()
    done_at = measured.committed_at
    if contender.emission is Emission.NONE:
        done_at = max(done_at, measured.output_changed_at)
    else:
        ctx.progress.status(f"{label} checking output against the oracle ...")
        check = await check_output(ctx.bootstrap, run.output_topic, dataset, contender.emission)
        result.correctness = check.correctness
        verdict = "correct" if check.correctness.passed else "WRONG"
        ctx.progress.say(f"{label} output {verdict}: {check.correctness.detail}")
        settled_at = (
            measured.output_changed_at
            if check.last_result_ms is None
            else check.last_result_ms / 1000
        )
        done_at = max(done_at, settled_at)
    throughput = measured.throughput(done_at)
    throughput.changelog_records = await _changelog_records(ctx, contender, run)
    throughput.windows = dataset.windows
    result.throughput = throughput
    ctx.progress.say(
        f"{label} {throughput.trades:,} trades in {throughput.seconds:.1f} s = "
        f"{throughput.rate:,.0f} trades/s, {throughput.windows_per_second:,.0f} windows/s, "
        f"{throughput.cpu_seconds:.1f} CPU s, "
        f"peak RSS {throughput.peak_rss_bytes / 2**20:.0f} MiB, "
        f"{throughput.changelog_per_1000:.1f} changelog records / 1000 trades"
    )
    return result


@dataclass
class _Measured:
    """What polling a contender saw, from which its throughput is computed once the done
    time is known (see :func:`run_throughput`)."""

    trades: int
    started_at: float
    first_at: float
    committed_at: float
    output_changed_at: float
    """When the poll last saw the output grow (by any record, closing tickers' too)."""
    output_records: int
    cpu: _CpuTrace
    peak_rss_bytes: int

    def throughput(self, done_at: float) -> Throughput:
        seconds = done_at - self.first_at
        return Throughput(
            trades=self.trades,
            seconds=seconds,
            rate=self.trades / seconds,
            startup_seconds=self.first_at - self.started_at,
            cpu_seconds=self.cpu.at(done_at) - self.cpu.at(self.first_at),
            peak_rss_bytes=self.peak_rss_bytes,
            changelog_records=0,
            output_records=self.output_records,
        )


async def _measure(
    ctx: Context,
    contender: Contender,
    run: RunSpec,
    proc: ContenderProcess,
    dataset: Dataset,
    label: str,
) -> _Measured:
    settings = ctx.settings
    group = contender.group_id(run)
    total = dataset.records
    trace = _CpuTrace()
    first_at: float | None = None
    committed_at: float | None = None
    output, output_changed_at = 0, 0.0
    progress_at, progress_value = time.time(), (-1, -1)
    deadline = time.time() + settings.timeout
    while True:
        now = time.time()
        if not proc.alive():
            raise ContenderFailed(
                f"exited with code {proc.popen.returncode if proc.popen else '?'}:\n"
                + proc.log_tail()
            )
        cpu, rss = proc.sample()
        trace.add(now, cpu)
        if first_at is None:
            first_ms = contender.first_record_ms(proc, run)
            first_at = first_ms / 1000 if first_ms is not None else None
        committed = await ctx.ops.committed_total(group, run.input_topic)
        if contender.emission is not Emission.NONE:
            latest = await ctx.ops.end_total(run.output_topic)
            if latest != output:
                output, output_changed_at = latest, now
        if committed >= total and committed_at is None:
            committed_at = now
        if (committed, output) != progress_value:
            progress_at, progress_value = now, (committed, output)
        elapsed = now - first_at if first_at else 0.0
        ctx.progress.status(
            f"{label} consumed {committed:,}/{total:,} (committed)"
            f"  {committed / elapsed if elapsed > 0 else 0:,.0f} trades/s"
            f"  output {output:,}  RSS {rss / 2**20:.0f} MiB  {elapsed:.0f} s"
        )
        if committed_at is not None and now - max(committed_at, output_changed_at) >= (
            settings.quiet_seconds
        ):
            break
        if now > deadline:
            raise ContenderFailed(f"not done after {settings.timeout:.0f} s:\n{proc.log_tail()}")
        if first_at is not None and now - progress_at > settings.stall_seconds:
            raise ContenderFailed(
                f"no progress for {settings.stall_seconds:.0f} s:\n{proc.log_tail()}"
            )
        await asyncio.sleep(_POLL_SECONDS)
    if first_at is None:
        raise ContenderFailed("never reported its first record:\n" + proc.log_tail())
    assert committed_at is not None
    return _Measured(
        trades=total,
        started_at=proc.started_at,
        first_at=first_at,
        committed_at=committed_at,
        output_changed_at=output_changed_at,
        output_records=output,
        cpu=trace,
        peak_rss_bytes=proc.peak_rss(),
    )


async def _changelog_records(ctx: Context, contender: Contender, run: RunSpec) -> int:
    topics = [t for t in await ctx.ops.list_topics() if contender.is_changelog(t, run)]
    return sum([await ctx.ops.end_total(topic) for topic in topics])
