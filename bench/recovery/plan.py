"""What one run measures: state sizes, segment sizes, and the knobs that shape the state.

Two presets: the full run (10k, 100k and 1M stored aggregates; 1 MiB, 8 MiB and 1 GiB
segments at 1M) and ``--quick`` (tiny sizes, faster checkpoints) for the end-to-end test. Every
preset value can be overridden from the command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "FULL",
    "MIB",
    "QUICK",
    "Plan",
    "format_bytes",
    "format_count",
    "parse_bytes",
    "parse_count",
]

MIB = 1024 * 1024
GIB = 1024 * MIB
#: The app's default ``CHANGELOG_SEGMENT_BYTES`` (the state-size series runs with it).
DEFAULT_SEGMENT_BYTES = 8 * MIB


@dataclass(frozen=True)
class Plan:
    """Everything that decides what is measured (recorded in the results, shown in the report)."""

    sizes: tuple[int, ...]
    """Target stored aggregates for the warm/cold/standby series."""
    segment_sizes: tuple[int, ...]
    """Changelog ``segment.bytes`` values for the cold-restore comparison."""
    segment_state: int
    """Target stored aggregates for the segment comparison."""
    panes: int = 10
    """Live 1 s panes per ticker (one aggregate each): tickers = size / panes. At most 10: a
    pane stays in the state until its last window closed plus WINDOW_RETENTION_MS (5 s)."""
    partitions: int = 4
    repeat: int = 1
    """Measurements of each restart kind per state (the report shows the median)."""
    commit_interval_ms: int = 1000
    session_timeout_ms: int = 6000
    """Short, so that the survivor of a SIGKILL learns of it quickly (the broker's minimum)."""
    standby: bool = True
    kstreams: bool = True
    """Kafka Streams restoring the same trades' state, cold and warm, at every size."""
    cleaner_stable_polls: int = 4
    """On-disk changelog size unchanged this many polls (2 s apart) = log cleaner done."""
    ready_timeout: float = 900.0

    def __post_init__(self) -> None:
        if not 1 <= self.panes <= 10:
            raise ValueError(f"panes must be in 1..10 (all live at the end), got {self.panes}")
        if self.partitions < 2 and self.standby:
            raise ValueError("a standby takeover needs at least 2 partitions")
        for size in (*self.sizes, self.segment_state):
            if size < self.panes:
                raise ValueError(f"state size {size} is below one ticker ({self.panes} panes)")

    def tickers(self, aggregates: int) -> int:
        return max(1, aggregates // self.panes)

    def with_overrides(self, **changes: object) -> Plan:
        """This plan with the given fields replaced (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]


FULL = Plan(
    sizes=(10_000, 100_000, 1_000_000),
    segment_sizes=(MIB, DEFAULT_SEGMENT_BYTES, GIB),
    segment_state=1_000_000,
    repeat=3,
)
QUICK = Plan(
    sizes=(400, 2_000),
    segment_sizes=(MIB, DEFAULT_SEGMENT_BYTES),  # 8 MiB shares the series' 2k measurement
    segment_state=2_000,
    panes=4,
    commit_interval_ms=250,
    cleaner_stable_polls=2,
    ready_timeout=120.0,
)

_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}
_BYTES = {"": 1, "b": 1, "kib": 1024, "mib": MIB, "gib": GIB, "kb": 1000, "mb": 10**6, "gb": 10**9}


def parse_count(text: str) -> int:
    """``10k`` -> 10000, ``1M`` -> 1000000, ``2500`` -> 2500."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*", text)
    if not match:
        raise ValueError(f"not a count: {text!r} (e.g. 10k, 1M, 2500)")
    return int(float(match.group(1)) * _SUFFIX[match.group(2).lower()])


def parse_bytes(text: str) -> int:
    """``1MiB`` -> 1048576, ``1GiB``, ``8388608``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _BYTES:
        raise ValueError(f"not a size in bytes: {text!r} (e.g. 1MiB, 8MiB, 1GiB)")
    return int(float(match.group(1)) * _BYTES[match.group(2).lower()])


def format_count(n: int) -> str:
    """1000000 -> ``1M``, 100000 -> ``100k``, 2500 -> ``2.5k``, 400 -> ``400``."""
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return str(n)


def format_bytes(n: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"
