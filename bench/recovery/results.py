"""The measurements of one run, as plain dataclasses saved to (and read back from) JSON.

Raw results are kept apart from the report so that the report and plots can be regenerated
(``--from-results``) without measuring again, and so that the end-to-end test can check the
numbers rather than parse Markdown.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

__all__ = [
    "KINDS",
    "Baseline",
    "KStreamsRestart",
    "KStreamsResult",
    "Phases",
    "Restart",
    "RunResult",
    "SegmentResult",
    "SizeResult",
    "StateInfo",
    "Takeover",
    "load_results",
    "median",
    "save_results",
]

#: Restart kinds, in report order.
KINDS = ("warm-sigterm", "warm-sigkill", "cold")


@dataclass
class Phases:
    """Seconds in each startup phase, from the worker's own log lines (None: line not found).

    boot: process start -> faust worker starting (interpreter and imports);
    join: -> partitions assigned (services started, tables registered, group joined);
    open: -> changelog recovery starts (RocksDB opened, offsets and high-water marks read);
    replay: -> changelog replay complete;
    load: -> tradestats loaded its partitions' state from RocksDB into memory;
    answer: -> /ready answered 200 (includes the poll interval, 50 ms).
    """

    boot: float | None = None
    join: float | None = None
    open: float | None = None
    replay: float | None = None
    load: float | None = None
    answer: float | None = None


@dataclass
class Restart:
    """One worker start measured from process start to the first 200 on /ready."""

    kind: str
    seconds_to_ready: float
    records_replayed: int
    """Changelog records applied to restore active partitions (the worker's
    ``tradestats_changelog_records_restored_total{role="active"}``)."""
    offsets_replayed: int
    """Changelog offsets faust read past the local store (high-water minus local offset, summed
    over partitions, from its recovery report): more than records when compaction left gaps."""
    phases: Phases
    slowest_answer_seconds: float = 0.0
    """Longest /ready round trip once the web server was up (event loop blocked at worst)."""


@dataclass
class Takeover:
    """A standby replica taking over the partitions of a SIGKILLed worker."""

    partitions: list[int]
    detection_seconds: float | None
    """Kill -> the survivor starts rebalancing (/ready turns 503): the session timeout at work."""
    assigned_seconds: float | None
    """Kill -> the survivor is assigned the partitions (its log)."""
    restore_seconds: float | None
    """Assigned -> /ready 200 with every partition: the takeover proper."""
    total_seconds: float
    """Kill -> /ready 200 with every partition."""
    records_replayed: int
    """Changelog records the survivor applied, labelled active, between the kill and ready.
    Includes standby records faust still held in its buffer and applied only after the
    reassignment (up to 1000), see ``offsets_replayed`` for what was read."""
    offsets_replayed: int | None
    """Changelog offsets faust read for the taken partitions, from its recovery report."""
    standby_records: int
    """Changelog records the survivor had applied to its standby copies before the kill."""
    full_restore_records: int
    """Records in those partitions' changelog: what a restore without a standby would replay."""
    rebalances: int
    """Assignments the survivor went through between the kill and ready."""
    phases: Phases
    slowest_answer_seconds: float = 0.0
    standby_catchup_seconds: float | None = None
    """The survivor's first assignment -> its standby counter at its final value (polled
    every 0.25 s): how long building the standby copies took."""


@dataclass
class StateInfo:
    """The state a measurement ran on, as built and as verified in the changelog."""

    target_aggregates: int
    tickers: int
    panes: int
    partitions: int
    segment_bytes: int
    """``segment.bytes`` of the changelog topic, read back from the broker."""
    trades: int
    build_seconds: float
    aggregates: int
    """Pane aggregates in the latest record of every live key in the changelog (the state a
    restore rebuilds); should equal the target."""
    live_keys: int
    changelog_offsets: int
    """Records ever written to the changelog (sum of end offsets)."""
    changelog_records: int
    """Records still in the changelog when measured (after the log cleaner compacted it)."""
    changelog_disk_bytes: int | None
    """On-disk size of the changelog's segments (None when the broker's log dir is unknown)."""
    cleaner_wait_seconds: float
    records_per_partition: dict[int, int] = field(default_factory=dict)
    keys_per_partition: dict[int, int] = field(default_factory=dict)
    metrics_bytes: int = 0
    """Size of one /metrics scrape of the worker that built the state."""
    metrics_seconds: float = 0.0


@dataclass
class KStreamsRestart:
    """One Kafka Streams start, measured from process start to ready: ``RUNNING`` and every
    changelog partition it began restoring restored (its restore listener's reports)."""

    kind: str
    """``cold`` (state directory emptied) or ``warm`` (intact, after a clean stop)."""
    seconds_to_ready: float
    records_restored: int
    """Changelog records its restore listener reported restored, summed over partitions."""
    restore_seconds: float | None
    """First partition's restore start -> last one's end (None: nothing was restored)."""


@dataclass
class KStreamsResult:
    """Kafka Streams on a state run's trades: its changelog, and its restarts on it."""

    build_seconds: float
    """Processing every trade once, committed (the changelog written)."""
    changelog_offsets: int
    changelog_records: int
    """Records left in its changelog after the log cleaner settled: what a cold start reads."""
    live_keys: int
    """Window records in its changelog (one per ticker and 5 s window)."""
    changelog_disk_bytes: int | None
    cleaner_wait_seconds: float
    restarts: list[KStreamsRestart] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[KStreamsRestart]:
        return [r for r in self.restarts if r.kind == kind]


@dataclass
class SizeResult:
    state: StateInfo
    restarts: list[Restart]
    takeover: Takeover | None = None
    kstreams: KStreamsResult | None = None
    """Kafka Streams restoring the same trades' state (None: not measured)."""

    def of_kind(self, kind: str) -> list[Restart]:
        return [r for r in self.restarts if r.kind == kind]


@dataclass
class SegmentResult:
    segment_bytes: int
    state: StateInfo
    cold: list[Restart]
    shared_with_series: bool = False
    """True when this is the state-size series' own measurement (same segment size and state)."""


@dataclass
class Baseline:
    """Another run's state-size series, shown beside this run's (the code before a change)."""

    label: str
    """What was measured, e.g. the commit and the restore path it has."""
    started: str
    finished: str
    command: str
    sizes: list[SizeResult]
    segments: list[SegmentResult] = field(default_factory=list)


@dataclass
class RunResult:
    started: str
    finished: str
    duration_seconds: float
    command: str
    quick: bool
    machine: dict[str, Any]
    plan: dict[str, Any]
    broker: str
    sizes: list[SizeResult] = field(default_factory=list)
    segments: list[SegmentResult] = field(default_factory=list)
    baseline: Baseline | None = None


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def save_results(result: RunResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(result), indent=2) + b"\n")


def load_results(path: Path) -> RunResult:
    return msgspec.json.decode(path.read_bytes(), type=RunResult)
