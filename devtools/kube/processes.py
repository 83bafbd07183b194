"""The cluster's daemons as recorded processes: started detached, found again by PID, stopped.

A PID alone is not an identity (PIDs are reused), so each record also keeps the process's
start time from ``/proc/<pid>/stat``: a process counts as ours only while both match. Nothing
is ever looked up or stopped by name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Daemon", "spawn"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Daemon:
    """A process this tool started: its PID and the kernel's start time for that PID."""

    name: str
    pid: int
    started: int

    def alive(self) -> bool:
        return _start_time(self.pid) == self.started

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns once it is gone."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            if not self.alive():
                return
            log.info("stopping %s (pid %d, %s)", self.name, self.pid, sig.name)
            os.kill(self.pid, sig)
            deadline = time.monotonic() + wait
            while self.alive() and time.monotonic() < deadline:
                _reap(self.pid)
                time.sleep(0.1)
        if self.alive():
            raise RuntimeError(f"{self.name} (pid {self.pid}) survived SIGKILL")

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "started": self.started}

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> Daemon:
        return cls(name, int(data["pid"]), int(data["started"]))


def spawn(
    name: str, command: Sequence[str], log_file: Path, env: Mapping[str, str] | None = None
) -> Daemon:
    """Start ``command`` in its own session, output appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as output:
        output.write(f"\n===== {time.ctime()}: {' '.join(command)}\n".encode())
        output.flush()
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    started = _start_time(process.pid)
    if started is None:
        raise RuntimeError(f"{name} exited at once; see {log_file}")
    return Daemon(name, process.pid, started)


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks after boot); None for a dead or zombie PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] == "Z":
        _reap(pid)
        return None
    return int(fields[19])


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (else it is someone else's job)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
