"""The project's docker-compose.yml run by the local Docker engine, as the tests drive it.

:class:`Stack` is one compose project (a unique name, so a developer's own ``tradestats`` stack
on the shared engine is never touched) on the stand-in images, with host ports chosen by the
test (``compose.test.yml``). :class:`UpSampler` watches Prometheus' ``up`` of the workers
continuously, in a thread, and tells which samples were 0 while a worker was meant to be up.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.docker import STANDINS_OVERRIDE, Compose, DockerEngine
from tests.integration.harness import free_port

REPO = Path(__file__).resolve().parents[2]
TEST_OVERRIDE = Path(__file__).resolve().parent / "compose.test.yml"
WORKERS = ("worker-0", "worker-1", "worker-2")
#: How long a scrape may take (prometheus.yml: 5 s interval, so a 5 s timeout): a scrape that
#: started this long before a worker was stopped on purpose may fail without a fault.
SCRAPE_MARGIN_S = 5.0


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@dataclass
class Stack:
    """One compose project of the stack, and what the test measured of it."""

    engine: DockerEngine
    project: str
    ports: dict[str, int] = field(
        default_factory=lambda: {name: free_port() for name in ("kafka", "prometheus", *WORKERS)}
    )
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def compose(self) -> Compose:
        env = {
            f"E2E_{name.upper().replace('-', '_')}_PORT": str(p) for name, p in self.ports.items()
        }
        files = [REPO / "docker-compose.yml", STANDINS_OVERRIDE, TEST_OVERRIDE]
        return Compose(self.engine, self.project, files, REPO, env)

    @property
    def bootstrap(self) -> str:
        """Kafka's host listener."""
        return f"localhost:{self.ports['kafka']}"

    def timed(self, name: str, *args: str, timeout: float = 900) -> str:
        """Run ``docker compose ARGS``; its duration goes to ``timings[name]``."""
        started = time.monotonic()
        output = self.compose(*args, timeout=timeout).stdout
        self.timings[name] = time.monotonic() - started
        return output

    # -- services -----------------------------------------------------------------------------

    def services(self) -> dict[str, dict[str, Any]]:
        """``docker compose ps --all``, by service: State, Health, ExitCode, ..."""
        out = self.compose("ps", "--all", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return {row["Service"]: row for row in rows}

    def worker_get(self, worker: str, path: str) -> tuple[int, str]:
        return _get(f"http://127.0.0.1:{self.ports[worker]}{path}")

    def ready(self, worker: str) -> bool:
        try:
            return self.worker_get(worker, "/ready")[0] == 200
        except OSError:
            return False

    def wait_ready(self, workers: Iterable[str], within: float) -> dict[str, float]:
        """Seconds until each worker answered /ready with 200, from now."""
        started = time.monotonic()
        pending, ready = set(workers), {}
        while pending:
            for worker in sorted(pending):
                if self.ready(worker):
                    ready[worker] = time.monotonic() - started
                    pending.discard(worker)
            if pending and time.monotonic() - started > within:
                raise AssertionError(
                    f"{sorted(pending)} not ready after {within:g} s; services: "
                    f"{self._states()}\n{self.logs(*pending)}"
                )
            time.sleep(0.25)
        return ready

    def metric(self, worker: str, series: str) -> float | None:
        """One series of a worker's /metrics (None when the worker does not export it)."""
        status, text = self.worker_get(worker, "/metrics")
        assert status == 200, f"{worker} /metrics answered {status}: {text[:500]}"
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name == series:
                return float(value)
        return None

    def logs(self, *services: str, tail: int = 80) -> str:
        return self.compose(
            "logs", "--no-color", "--tail", str(tail), *services, check=False
        ).stdout

    def _states(self) -> dict[str, str]:
        return {
            name: f"{row['State']} {row.get('Health', '')} exit={row.get('ExitCode')}".strip()
            for name, row in self.services().items()
        }

    # -- Prometheus ---------------------------------------------------------------------------

    def prometheus(self, path: str, **params: str) -> Any:
        """The ``data`` of a Prometheus API answer (fails the test on an error answer)."""
        query = urllib.parse.urlencode(params)
        status, body = _get(f"http://127.0.0.1:{self.ports['prometheus']}{path}?{query}", 10)
        assert status == 200, f"Prometheus {path} {params}: {status} {body[:500]}"
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expression: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query (at ``at``, a Unix time, or now): the result vector."""
        params = {"query": expression} | ({} if at is None else {"time": f"{at:.3f}"})
        result: list[dict[str, Any]] = self.prometheus("/api/v1/query", **params)["result"]
        return result


@dataclass
class UpSampler:
    """Samples ``up{job="tradestats"}`` every second, with each scrape's own timestamp.

    The test marks the intervals in which a worker is down on purpose (``away``/``back``);
    ``faults()`` lists the scrapes that failed outside them. While Prometheus itself is down
    (``docker compose down``) there is nothing to sample.
    """

    stack: Stack
    interval: float = 1.0
    samples: dict[tuple[str, float], float] = field(default_factory=dict)
    errors: int = 0
    _away: dict[str, list[list[float]]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> UpSampler:
        self._thread = threading.Thread(target=self._run, name="up-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def away(self, *workers: str) -> None:
        """From now on these workers are down on purpose (a scrape in flight may fail too)."""
        for worker in workers:
            self._away.setdefault(worker, []).append([time.time() - SCRAPE_MARGIN_S, float("inf")])

    def back(self, worker: str, since: float | None = None) -> None:
        """The worker is ready again (since ``since``, a Unix time, or now): from then on every
        scrape of it must succeed, through the rebalances of the others' joining too."""
        self._away[worker][-1][1] = time.time() if since is None else since

    def faults(self) -> list[tuple[str, float]]:
        """(worker, scrape time) of every failed scrape while the worker was meant to be up."""
        return sorted(
            (worker, at)
            for (worker, at), value in self.samples.items()
            if value != 1
            and not any(start <= at <= end for start, end in self._away.get(worker, []))
        )

    def scrapes(self, worker: str) -> int:
        return sum(1 for pod, _ in self.samples if pod == worker)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.time()
            try:
                values = self.stack.query('up{job="tradestats"}', now)
                stamps = self.stack.query('timestamp(up{job="tradestats"})', now)
            except (OSError, AssertionError, ValueError):
                self.errors += 1  # Prometheus is restarting with the stack
                continue
            at = {row["metric"]["pod"]: float(row["value"][1]) for row in stamps}
            for row in values:
                pod = row["metric"]["pod"]
                if pod in at:
                    self.samples[(pod, at[pod])] = float(row["value"][1])
