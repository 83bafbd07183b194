"""What a run measured, as plain dataclasses (written to JSON, read back by the report).

A run is a sweep over trade densities: at each point every contender reads the same input
(:class:`SweepPoint`), once or in several interleaved rounds; the emit-latency phase runs once
per contender, after the sweep.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

__all__ = [
    "ContenderResult",
    "Correctness",
    "Latency",
    "RunResult",
    "SweepPoint",
    "Throughput",
    "combine_rounds",
]


@dataclass
class Throughput:
    trades: int
    """Input records consumed (trades and closing trades)."""
    seconds: float
    """From the first record consumed to done (input committed and output settled)."""
    rate: float
    startup_seconds: float
    """From process start to the first record consumed (not part of ``seconds``)."""
    cpu_seconds: float
    """CPU (user + system) of the contender's process over ``seconds``."""
    peak_rss_bytes: int
    changelog_records: int
    output_records: int
    windows: int = 0
    """Window results the input holds (every ticker's windows, the same for all contenders)."""

    @property
    def windows_per_second(self) -> float:
        return self.windows / self.seconds if self.seconds else 0.0

    @property
    def changelog_per_1000(self) -> float:
        return self.changelog_records / self.trades * 1000 if self.trades else 0.0

    @property
    def trades_per_cpu_second(self) -> float:
        return self.trades / self.cpu_seconds if self.cpu_seconds else 0.0


@dataclass
class Correctness:
    passed: bool
    windows_checked: int
    detail: str


@dataclass
class Latency:
    rate: float
    """Input trades per second (fixed), wall-clock timestamps."""
    seconds: float
    windows: int
    """Windows measured (complete, after the warm-up, closed before the input stopped)."""
    incomplete: int
    """Of the windows that should have been measured, those never emitted with all trades."""
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass
class ContenderResult:
    key: str
    name: str
    title: str
    emission: str
    throughput: Throughput | None = None
    correctness: Correctness | None = None
    latency: Latency | None = None
    errors: list[str] = field(default_factory=list)
    rounds: list[Throughput] = field(default_factory=list)
    """Every round's throughput in run order, when the point ran more than one round
    (``throughput`` is then the median round's)."""

    @property
    def ok(self) -> bool:
        return (
            not self.errors
            and self.throughput is not None
            and (self.correctness is None or self.correctness.passed)
        )

    def round_ratios(self, reference: ContenderResult | None) -> list[float]:
        """Round *k*'s rate over ``reference``'s round *k*, for every round (none unless both
        ran the same rounds). Round *k* of one ran right after round *k* of the other, so a
        busy spell of the machine moves both."""
        if reference is None or not self.rounds or len(self.rounds) != len(reference.rounds):
            return []
        return [
            own.rate / theirs.rate
            for own, theirs in zip(self.rounds, reference.rounds, strict=True)
        ]

    def ratio_to(self, reference: ContenderResult | None) -> float | None:
        """This contender's rate over ``reference``'s: the median of the rounds' ratios, or
        with a single round the ratio of the two rates."""
        if reference is None or self.throughput is None or reference.throughput is None:
            return None
        ratios = self.round_ratios(reference)
        if ratios:
            return statistics.median(ratios)
        return self.throughput.rate / reference.throughput.rate


def combine_rounds(rounds: list[ContenderResult]) -> ContenderResult:
    """One contender's result at a point from its rounds: the median round's throughput
    (by rate), every round's in ``rounds``; failed unless every round ran and was correct."""
    if len(rounds) == 1:
        return rounds[0]
    first = rounds[0]
    combined = ContenderResult(first.key, first.name, first.title, first.emission)
    for number, result in enumerate(rounds, 1):
        combined.errors += [f"round {number}: {error}" for error in result.errors]
        if result.throughput is None and not result.errors:
            combined.errors.append(f"round {number}: no throughput measured")
    throughputs = [result.throughput for result in rounds if result.throughput is not None]
    if len(throughputs) == len(rounds):
        combined.rounds = throughputs
        by_rate = sorted(range(len(rounds)), key=lambda index: throughputs[index].rate)
        middle = by_rate[(len(rounds) - 1) // 2]  # the lower middle one of an even count
        combined.throughput = throughputs[middle]
        combined.correctness = rounds[middle].correctness
    wrong = [result for result in rounds if result.correctness and not result.correctness.passed]
    if wrong:
        combined.correctness = wrong[0].correctness
    return combined


@dataclass
class SweepPoint:
    """One density of the sweep: its input, and every contender's run on it."""

    density: float
    """Trades per ticker per second of event time."""
    tickers: int
    dataset: dict[str, Any]
    contenders: list[ContenderResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.contenders) and all(c.ok for c in self.contenders)

    def by_key(self) -> dict[str, ContenderResult]:
        return {c.key: c for c in self.contenders}


@dataclass
class RunResult:
    command: str
    started: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    points: list[SweepPoint] = field(default_factory=list)
    latency: list[ContenderResult] = field(default_factory=list)
    """The emit-latency phase, per contender (its ``latency`` and errors)."""
    seconds: float = 0.0
    load_average_at_end: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            bool(self.points)
            and all(p.ok for p in self.points)
            and all(not c.errors for c in self.latency)
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for raw_point, point in zip(data["points"], self.points, strict=True):
            for raw, result in zip(raw_point["contenders"], point.contenders, strict=True):
                t = result.throughput
                if t is not None:
                    raw["throughput"]["changelog_per_1000"] = t.changelog_per_1000
                    raw["throughput"]["trades_per_cpu_second"] = t.trades_per_cpu_second
                    raw["throughput"]["windows_per_second"] = t.windows_per_second
                raw["ok"] = result.ok
            raw_point["ok"] = point.ok
        data["ok"] = self.ok
        return data

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> RunResult:
        """A run as :meth:`write` wrote it (the fields it derives are computed again)."""
        return msgspec.convert(json.loads(path.read_text()), cls)
