"""A contender as a separate OS process, measured with psutil.

Each contender runs alone in its own process so its CPU time and memory are its own. CPU is
read from the kernel's per-process accounting (user + system, all threads: JIT and GC
threads count for the JVM, librdkafka threads for Quix Streams). Peak RSS is the kernel's
high-water mark (``VmHWM``), read just before the process is stopped; psutil's sampled RSS
is the fallback where that is unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

__all__ = ["ContenderProcess", "Launch", "run_until_sigterm"]

_EVENT = re.compile(r"^(\S+) (\d+)$")
_T = TypeVar("_T")
#: The exit status of a run stopped by SIGTERM (128 + the signal's number, as a shell says).
SIGTERM_STATUS = 128 + signal.SIGTERM


def run_until_sigterm(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(main)``, SIGTERM cancelling it as Ctrl-C does, so that the contenders
    and the broker the run started are stopped on its way out (their ``finally`` blocks)
    rather than left running; the process then exits with :data:`SIGTERM_STATUS`."""

    async def cancelled_by_sigterm() -> _T:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main

    try:
        return asyncio.run(cancelled_by_sigterm())
    except asyncio.CancelledError:
        print("stopped by SIGTERM: contenders and broker stopped", flush=True)
        raise SystemExit(SIGTERM_STATUS) from None


@dataclass(frozen=True)
class Launch:
    """How to start a contender: argv, extra environment, working directory."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass
class ContenderProcess:
    """One running contender; its output goes to ``log_path``, its events to ``events_path``.

    Contenders written for the benchmark append ``<event> <epoch ms>`` lines to the file named
    by the ``BENCH_EVENTS`` environment variable (``first-record`` when the first input record
    is consumed); a file rather than stdout because faust redirects stdout into its logger.
    """

    name: str
    launch: Launch
    log_path: Path
    events_path: Path
    popen: subprocess.Popen[bytes] | None = None
    proc: psutil.Process | None = None
    started_at: float = 0.0
    peak_rss_sampled: int = 0

    def start(self) -> ContenderProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.events_path.unlink(missing_ok=True)
        env = {**os.environ, **self.launch.env, "BENCH_EVENTS": str(self.events_path)}
        with self.log_path.open("ab") as log:
            self.started_at = time.time()
            self.popen = subprocess.Popen(
                self.launch.argv,
                env=env,
                cwd=self.launch.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches the harness only
            )
        self.proc = psutil.Process(self.popen.pid)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def events(self) -> dict[str, int]:
        """Events reported so far: name -> epoch ms of its first report."""
        found: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in self.events_path.read_text().splitlines():
                match = _EVENT.match(line.strip())
                if match:
                    found.setdefault(match.group(1), int(match.group(2)))
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process so far (all threads)."""
        assert self.proc is not None
        times = self.proc.cpu_times()
        return float(times.user + times.system)

    def sample(self) -> tuple[float, int]:
        """(CPU seconds, RSS bytes) now; also tracks the sampled peak RSS."""
        assert self.proc is not None
        with self.proc.oneshot():
            cpu = self.cpu_seconds()
            rss = int(self.proc.memory_info().rss)
        self.peak_rss_sampled = max(self.peak_rss_sampled, rss)
        return cpu, rss

    def peak_rss(self) -> int:
        """The kernel's RSS high-water mark (bytes), else the highest sampled RSS."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return max(int(line.split()[1]) * 1024, self.peak_rss_sampled)
        return self.peak_rss_sampled

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s; returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
