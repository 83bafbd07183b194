"""Timing worker starts: /ready polled every 50 ms, and the startup phases from the worker's log.

The pods are the scenario harness's local StatefulSet (``tests/scenarios/statefulset.py``):
real ``tradestats worker`` processes with stable names, static membership and a data
directory each. Seconds-to-ready alone would hide where the time goes, so each start is also
split into phases using the timestamps of log lines the worker writes anyway (wall clock, ms),
aligned with the wall-clock time the process was started.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench.progress import Progress
from bench.recovery.results import Phases
from tests.integration.harness import Worker
from tests.scenarios.statefulset import StatefulSet, parse_recoveries

__all__ = [
    "LogEvents",
    "Prober",
    "ReadyWait",
    "StartTiming",
    "active_restored",
    "metric",
    "phases_of_start",
    "start_timed",
    "wait_ready",
]

READY_POLL_SECONDS = 0.05
ACTIVE_RESTORED = 'tradestats_changelog_records_restored_total{role="active"}'
STANDBY_RESTORED = 'tradestats_changelog_records_restored_total{role="standby"}'

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+\s+\S+: (.*)$")
WORKER_STARTING = "[^Worker]: Starting..."
ASSIGNED = "Executing _on_partitions_assigned"
RESTORE_BEGIN = "Highwater for active changelog partitions:"
RESTORE_END = "Recovery complete"
LOADED = "ready: input partitions"


class LogEvents:
    """A worker log's timestamped lines (text format), for finding when things happened."""

    def __init__(self, text: str) -> None:
        self.events: list[tuple[float, str]] = []
        for line in text.splitlines():
            match = _LINE.match(line)
            if match:
                when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                self.events.append((when, match.group(2)))

    def first(self, needle: str, after: float | None = None) -> float | None:
        """Wall time of the first line containing ``needle`` at or after ``after``."""
        for when, message in self.events:
            if needle in message and (after is None or when >= after - 0.0005):
                return when
        return None

    def count(self, needle: str, after: float, before: float) -> int:
        return sum(1 for w, m in self.events if needle in m and after <= w <= before)


def _gap(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else max(0.0, end - start)


def phases_of_start(events: LogEvents, started: float, ready: float) -> Phases:
    """Split a start (wall clock ``started`` -> ``ready``) into phases (see :class:`Phases`)."""
    booted = events.first(WORKER_STARTING, started)
    assigned = events.first(ASSIGNED, booted or started)
    restore_begin = events.first(RESTORE_BEGIN, assigned or started)
    restore_end = events.first(RESTORE_END, restore_begin or started)
    loaded = events.first(LOADED, restore_end or started)
    return Phases(
        boot=_gap(started, booted),
        join=_gap(booted, assigned),
        open=_gap(assigned, restore_begin),
        replay=_gap(restore_begin, restore_end),
        load=_gap(restore_end, loaded),
        answer=_gap(loaded, ready),
    )


@dataclass
class ReadyWait:
    """When /ready answered 200 (monotonic and wall clock), and with which partitions."""

    monotonic: float
    wall: float
    partitions: list[int]
    slowest_answer: float
    """Longest /ready round trip once the web server was up: how long the worker's event
    loop was blocked at worst (a liveness probe would have waited as long)."""


class Prober:
    """GET /ready with a long timeout, remembering the slowest answer.

    The timeout is long on purpose: a busy event loop answers late rather than never, and the
    delay is what a Kubernetes probe would see.
    """

    def __init__(self, pod: Worker, timeout: float = 30.0) -> None:
        self.pod = pod
        self.timeout = timeout
        self.slowest = 0.0
        self._up = False

    def get(self) -> tuple[int, dict[str, Any]]:
        started = time.monotonic()
        try:
            status, body = self.pod.get("/ready", timeout=self.timeout)
        except OSError:
            if self._up:
                self.slowest = max(self.slowest, time.monotonic() - started)
            return 0, {"reason": "web server not up yet" if not self._up else "no answer"}
        if self._up:
            self.slowest = max(self.slowest, time.monotonic() - started)
        self._up = True
        return status, body if isinstance(body, dict) else {"reason": str(body)}


def wait_ready(
    pod: Worker,
    *,
    timeout: float,
    progress: Progress,
    label: str,
    accept: Callable[[list[int]], bool] = lambda _: True,
) -> ReadyWait:
    """Poll /ready every 50 ms until it answers 200 with partitions ``accept`` likes.

    The 503 body says what the worker is doing ("restoring state: N changelog records to
    go"): shown as progress, at no cost to the worker.
    """
    deadline = time.monotonic() + timeout
    prober = Prober(pod)
    while time.monotonic() < deadline:
        if not pod.alive():
            raise RuntimeError(f"{pod.name} exited while starting:\n{pod.log_tail()}")
        status, body = prober.get()
        now_mono, now_wall = time.monotonic(), time.time()
        if status == 200 and accept(list(body.get("partitions", []))):
            return ReadyWait(now_mono, now_wall, list(body["partitions"]), prober.slowest)
        progress.status(f"{label}: {body.get('reason', f'HTTP {status}')}")
        time.sleep(READY_POLL_SECONDS)
    raise RuntimeError(f"{pod.name} not ready after {timeout:.0f} s:\n{pod.log_tail()}")


@dataclass
class StartTiming:
    seconds: float
    phases: Phases
    offsets_replayed: int
    partitions: list[int]
    slowest_answer: float


def start_timed(
    sts: StatefulSet, i: int, *, timeout: float, progress: Progress, label: str
) -> StartTiming:
    """Start pod ``i`` and time it from process start to the first 200 on /ready."""
    pod = sts.start(i)
    started_wall = time.time() - (time.monotonic() - pod.started_at)
    ready = wait_ready(pod, timeout=timeout, progress=progress, label=label)
    log = sts.log_since_start(i)
    recoveries = parse_recoveries(log)
    return StartTiming(
        seconds=ready.monotonic - pod.started_at,
        phases=phases_of_start(LogEvents(log), started_wall, ready.wall),
        offsets_replayed=recoveries[0].total_replayed if recoveries else 0,
        partitions=ready.partitions,
        slowest_answer=ready.slowest_answer,
    )


def metric(pod: Worker, series: str) -> float:
    """One series of the pod's /metrics (0 when absent)."""
    return pod.metrics().get(series, 0.0)


def active_restored(pod: Worker) -> int:
    return int(metric(pod, ACTIVE_RESTORED))
