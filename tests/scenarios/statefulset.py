"""A local StatefulSet: N ``tradestats worker`` processes, run the way Kubernetes runs them.

Pod *i* is always ``tradestats-i``: that name is its ``POD_NAME``, which the worker uses as its
static group instance id (KIP-345). Each pod keeps, across restarts, its own data directory (its
persistent volume, gone only when a test calls :meth:`StatefulSet.wipe`), its own web port and
canonical URL (``http://127.0.0.1:<port>``, like the stable DNS name behind a headless
Service). All pods share the app id (one consumer group) and every other setting.

Pods are :class:`tests.integration.harness.Worker` processes; the operations are those of a
StatefulSet controller and of a chaos test: start, stop (SIGTERM), kill (SIGKILL), wipe,
``scale_to``, and waiting until the group has settled.

It also reads the faust recovery report each pod logs after every assignment (see
:class:`Recovery`): how far each changelog partition had to be replayed.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.harness import Topics, Worker, worker_env
from tests.scenarios.load import WORKER_DECISIONS

__all__ = [
    "POD_PREFIX",
    "SESSION_TIMEOUT_MS",
    "Recovery",
    "StatefulSet",
    "parse_recoveries",
    "parse_standbys",
    "pod_env",
]

POD_PREFIX = "tradestats"
_START_MARKER = "===== start "
#: aiokafka's log lines for each failed reconnection attempt (many per second per client), and
#: the dead letters of the load's bad records.
_NOISE = re.compile(
    r"Unable connect to node|Unable to update metadata|NodeNotReadyError|record\(s\) dead-lettered"
)


@dataclass(frozen=True)
class Recovery:
    """One faust recovery of a pod's active changelog partitions (one assignment).

    faust logs, before it restores, a table of the changelog high-water marks (the offset of the
    last record, -1 when empty) and a table of the offsets its local store already holds
    ("Reading Starts At": the changelog offset persisted in the partition's RocksDB database,
    -1 when it has none). It reads every changelog record after the second up to the first, so
    ``highwater - start`` is the number of changelog offsets replayed for that partition: the
    tail after a warm restart, everything after a cold one, the little a standby lagged.
    """

    highwater: dict[int, int]
    start: dict[int, int]

    def replayed(self, partition: int) -> int:
        return max(0, self.highwater[partition] - self.start[partition])

    @property
    def total_replayed(self) -> int:
        return sum(self.replayed(p) for p in self.highwater)

    @property
    def partitions(self) -> set[int]:
        return set(self.highwater)


_TABLES = {
    "Highwater for active changelog partitions:": "highwater",
    "active offsets at start of reading:": "start",
    "standby offsets at start of reading:": "standby",
}
_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*(\d+)\s*\|\s*(-?\d+)\s*\|$")


def _log_tables(log_text: str) -> Iterator[tuple[str, dict[int, int]]]:
    """faust's recovery tables in a log: (kind, {partition: offset}), in log order."""
    lines = log_text.splitlines()
    for index, line in enumerate(lines):
        kind = next((k for marker, k in _TABLES.items() if line.endswith(marker)), None)
        if kind is None:
            continue
        rows: dict[int, int] = {}
        for row in lines[index + 1 :]:
            if not row.startswith(("|", "+")):
                break
            match = _ROW.match(row)
            if match:
                rows[int(match.group(2))] = int(match.group(3))
        yield kind, rows


def parse_recoveries(log_text: str) -> list[Recovery]:
    """Every active-partition recovery report in a pod's log, oldest first."""
    recoveries: list[Recovery] = []
    highwater: dict[int, int] | None = None
    for kind, rows in _log_tables(log_text):
        if kind == "highwater":
            highwater = rows
        elif kind == "start" and highwater is not None:
            if rows:  # faust skips this table when no partition is active
                recoveries.append(Recovery(highwater, rows))
            highwater = None
    return recoveries


def parse_standbys(log_text: str) -> set[int]:
    """Every partition a pod's log shows it was assigned as a standby replica."""
    return {p for kind, rows in _log_tables(log_text) if kind == "standby" for p in rows}


@dataclass
class StatefulSet:
    """Pods ``tradestats-0..`` sharing ``env``, with their volumes and logs under ``root``."""

    root: Path
    env: dict[str, str]
    partitions: int
    pods: list[Worker] = field(default_factory=list)
    desired: set[int] = field(default_factory=set)
    """Pods that should be running (started and neither stopped nor killed by the test)."""

    # --- pods ----------------------------------------------------------------------------------

    def pod(self, i: int) -> Worker:
        """Pod ``tradestats-i`` (created on first use; same volume, port and URL ever after)."""
        while len(self.pods) <= i:
            name = f"{POD_PREFIX}-{len(self.pods)}"
            self.pods.append(
                Worker(name, self.env, self.root / f"data-{name}", self.root / f"{name}.log")
            )
        return self.pods[i]

    @property
    def running(self) -> list[int]:
        return [i for i, pod in enumerate(self.pods) if pod.alive()]

    def start(self, i: int) -> Worker:
        pod = self.pod(i)
        assert not pod.alive(), f"{pod.name} is already running"
        self.desired.add(i)
        return pod.start()

    def stop(self, i: int, timeout: float = 60.0) -> tuple[int, float]:
        """SIGTERM, as the kubelet does; returns (exit code, seconds until it exited)."""
        self.desired.discard(i)
        return self.pod(i).terminate(timeout)

    def kill(self, i: int) -> None:
        """SIGKILL: the pod dies without any cleanup (its volume stays as it was)."""
        self.desired.discard(i)
        self.pod(i).kill()

    def wipe(self, i: int) -> None:
        """Empty the pod's volume (an emptyDir, or a lost disk); the pod must be down."""
        pod = self.pod(i)
        assert not pod.alive(), f"wipe {pod.name} while it runs"
        shutil.rmtree(pod.data_dir, ignore_errors=True)

    def scale_to(self, replicas: int, timeout: float = 60.0) -> dict[int, tuple[int, float]]:
        """Start the missing pods below ``replicas``; SIGTERM those above, highest first.

        Returns the (exit code, seconds) of every pod stopped.
        """
        for i in range(replicas):
            if not self.pod(i).alive():
                self.start(i)
        return {
            i: self.stop(i, timeout) for i in sorted(self.running, reverse=True) if i >= replicas
        }

    def close(self) -> None:
        self.desired.clear()
        for pod in self.pods:
            pod.stop_quietly()

    def check_alive(self) -> None:
        """Fail if a pod that should be running has exited (crashed)."""
        for i in sorted(self.desired):
            pod = self.pod(i)
            if not pod.alive():
                code = pod.process.returncode if pod.process else None
                raise AssertionError(f"{pod.name} exited with {code}:\n{pod.log_tail(80)}")

    # --- observing -----------------------------------------------------------------------------

    def wait_ready(self, pods: list[int] | None = None, timeout: float = 120.0) -> dict[int, float]:
        """Seconds from process start to the first 200 on /ready, for each pod (default: all)."""
        return {i: self.pod(i).wait_ready(timeout) for i in pods or self.running}

    def assignment(self) -> dict[int, list[int]]:
        """Active partitions of every running pod that answers /ready with 200."""
        assigned = {}
        for i in self.running:
            try:
                status, body = self.pod(i).get("/ready", timeout=2)
            except OSError:
                continue
            if status == 200:
                assigned[i] = list(body["partitions"])
        return assigned

    def wait_settled(self, timeout: float = 120.0) -> dict[int, list[int]]:
        """Until every running pod is ready and together they own each partition exactly once.

        Pods that were killed keep their partitions until their session times out (static
        membership), so this also waits for that.
        """
        deadline = time.monotonic() + timeout
        assigned: dict[int, list[int]] = {}
        while time.monotonic() < deadline:
            self.check_alive()
            assigned = self.assignment()
            owned = sorted(p for partitions in assigned.values() for p in partitions)
            if set(assigned) == self.desired and owned == list(range(self.partitions)):
                return assigned
            time.sleep(0.25)
        raise AssertionError(
            f"group not settled after {timeout} s: running {self.running}, "
            f"assignment {assigned}\n{self.log_tails()}"
        )

    def owner(self, partition: int) -> int:
        """The running pod whose /ready lists ``partition`` as active."""
        for i, partitions in self.assignment().items():
            if partition in partitions:
                return i
        raise AssertionError(f"no ready pod owns partition {partition}")

    def stats(self, ticker: str, via: int = 0) -> tuple[int, Any]:
        """GET /stats/{ticker} on pod ``via`` (forwarded to the owner if needed)."""
        return self.pod(via).get(f"/stats/{ticker}")

    def metric(self, series: str, pods: list[int] | None = None) -> float:
        """A Prometheus series summed over pods (default: the running ones)."""
        return sum(self.pod(i).metrics().get(series, 0.0) for i in pods or self.running)

    def log_since_start(self, i: int) -> str:
        """The pod's log from its latest start."""
        pod = self.pod(i)
        text = pod.log_text()
        return text[text.rfind(_START_MARKER) :] if _START_MARKER in text else text

    def recoveries(self, i: int) -> list[Recovery]:
        """faust's recovery reports in the pod's log since its latest start, oldest first."""
        return parse_recoveries(self.log_since_start(i))

    def standbys(self, i: int) -> set[int]:
        """Partitions the pod was assigned as a standby replica since its latest start."""
        return parse_standbys(self.log_since_start(i))

    def wait_recovery(
        self, i: int, partition: int, *, after: int = 0, timeout: float = 60.0
    ) -> Recovery:
        """The first recovery since the pod's latest start that makes ``partition`` active,
        skipping the first ``after`` recoveries (those before the event of interest)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            for recovery in self.recoveries(i)[after:]:
                if partition in recovery.partitions:
                    return recovery
            time.sleep(0.25)
        raise AssertionError(
            f"{self.pod(i).name} never recovered partition {partition}:\n{self.log_tails()}"
        )

    def diagnosis(self, lines: int = 20) -> str:
        """Each pod's state and the last of its log lines that say what it decided
        (:data:`WORKER_DECISIONS`). Short enough for a failure message, which CI shows in full
        where it cuts the printed log tails."""
        parts = []
        for pod in self.pods:
            text = pod.log_text()
            notable = [
                line
                for line in text.splitlines()
                if WORKER_DECISIONS.search(line) and not _NOISE.search(line)
            ]
            if pod.alive():
                state = "running"
            else:
                state = f"exited with {pod.process.returncode}" if pod.process else "not started"
            parts.append(f"{pod.name} ({state}):\n  " + "\n  ".join(notable[-lines:]))
        return "\n".join(parts)

    def log_tails(self, lines: int = 60) -> str:
        """The end of every pod's log, without the client's reconnection noise and the dead
        letters (the load has bad records)."""
        tails = []
        for pod in self.pods:
            text = pod.log_text()
            kept = [line for line in text.splitlines() if not _NOISE.search(line)]
            state = "running" if pod.alive() else "down"
            tails.append(f"----- {pod.name} ({state}):\n" + "\n".join(kept[-lines:]))
        return "\n".join(tails)


#: Static members do not leave the group on shutdown: a stopped pod keeps its partitions until
#: its session times out. 10 s (the broker's minimum is 6 s) keeps scale-in and failover tests
#: short while a quick restart (a few seconds) still keeps the assignment.
SESSION_TIMEOUT_MS = 10_000


def pod_env(bootstrap: str, topics: Topics, partitions: int, **overrides: object) -> dict[str, str]:
    """The pods' shared settings: the integration defaults (windows of a partition without
    trades close after 2 s) and a short session timeout."""
    settings: dict[str, object] = {"kafka_session_timeout_ms": SESSION_TIMEOUT_MS, **overrides}
    return worker_env(bootstrap, topics, partitions, **settings)
