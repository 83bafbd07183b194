"""What the harness needs to know about a contender: how to build and start it, and how to
recognise its consumer group, its changelog topics and its first consumed record."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bench.process import ContenderProcess, Launch

__all__ = ["REPO_ROOT", "Contender", "Emission", "RunSpec"]

REPO_ROOT = Path(__file__).resolve().parents[2]


class Emission(StrEnum):
    """How a contender emits window results, which decides what "correct" means for it."""

    FINAL = "final"
    """One result per window when it closes: that result must equal the oracle's."""
    UPDATES = "updates"
    """Updated results as windows change: the last one per window must equal the oracle's."""
    NONE = "none"
    """No output (the bare consume loop): nothing to check."""


@dataclass(frozen=True)
class RunSpec:
    """One run of one contender: where it reads and writes, and under which identity."""

    bootstrap: str
    input_topic: str
    output_topic: str
    app_id: str
    """Unique per run: consumer group, application id, changelog topic prefix."""
    work_dir: Path
    """Empty directory of its own: state stores, logs."""
    partitions: int
    web_port: int


class Contender(ABC):
    key: str
    name: str
    title: str
    emission: Emission
    #: Commit (or checkpoint) interval the harness configures, seconds; see docs.
    commit_interval: float = 1.0

    def prepare(self, cache_dir: Path, say: Callable[[str], None]) -> None:  # noqa: B027
        """Build or install what the contender needs, once (cached under ``cache_dir``)."""

    @abstractmethod
    def launch(self, run: RunSpec) -> Launch: ...

    def group_id(self, run: RunSpec) -> str:
        return run.app_id

    def is_changelog(self, topic: str, run: RunSpec) -> bool:
        return topic.startswith(f"{run.app_id}-") and topic.endswith("-changelog")

    def first_record_ms(self, proc: ContenderProcess, run: RunSpec) -> int | None:
        """Epoch ms at which the contender consumed its first input record, if it has."""
        return proc.events().get("first-record")
