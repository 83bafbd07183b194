"""Every contender, in report order."""

from __future__ import annotations

from pathlib import Path

from bench.contenders.bare import Bare
from bench.contenders.base import Contender
from bench.contenders.faust_textbook import FaustTextbook
from bench.contenders.kstreams import KafkaStreams
from bench.contenders.quix import Quix
from bench.contenders.tradestats import Tradestats

__all__ = ["CEILING", "TRADESTATS", "all_contenders", "select"]

TRADESTATS = "a"
CEILING = "e"


def all_contenders(quix_python: Path | None = None) -> list[Contender]:
    return [
        Tradestats(),
        FaustTextbook(),
        Quix(quix_python),
        KafkaStreams(),
        KafkaStreams(suppress=True),
        Bare(),
    ]


def select(contenders: list[Contender], only: str | None) -> list[Contender]:
    """Contenders named in ``only`` (comma-separated keys or names), all when None."""
    if not only:
        return contenders
    wanted = {part.strip() for part in only.split(",") if part.strip()}
    chosen = [c for c in contenders if c.key in wanted or c.name in wanted]
    unknown = wanted - {c.key for c in chosen} - {c.name for c in chosen}
    if unknown:
        names = ", ".join(f"{c.key}={c.name}" for c in contenders)
        raise ValueError(f"unknown contender(s) {sorted(unknown)}; choose from {names}")
    return chosen
