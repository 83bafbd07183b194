"""Events a contender app reports to the harness (standard library only: every app uses it).

An event is one line ``<name> <epoch ms>`` appended to the file named by ``BENCH_EVENTS``.
"""

from __future__ import annotations

import os
import time

__all__ = ["FirstRecord", "report"]


def report(name: str) -> None:
    path = os.environ.get("BENCH_EVENTS")
    if path:
        with open(path, "a") as events:
            events.write(f"{name} {int(time.time() * 1000)}\n")


class FirstRecord:
    """Reports ``first-record`` once; later calls cost one attribute test."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self) -> None:
        if not self.seen:
            self.seen = True
            report("first-record")
