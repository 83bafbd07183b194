"""The compose stack, built and started once for the tests of this package on the local Docker
engine, and taken down when the last of them is done (not at the end of the whole session: the
stack's eight containers would otherwise share the cores with every later test).

``compose_stack`` installs and starts what it needs itself: Debian's Docker engine (or the
machine's running one of ``devtools.docker``), Compose v2 from PyPI, the stand-in images, then
``docker compose build`` and ``up`` of the project's docker-compose.yml as users run it (the
stand-ins and the test's host ports are the only overrides). It fails, never skips, when any
of it cannot start. Tests that use the stack must leave it as they found it: all services up.

Afterwards the stack is taken down with its volumes, and nothing of it may be left behind
(containers, networks, volumes); the engine is stopped if this session started it and nobody
else uses it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from devtools.docker import DockerEngine, ensure_standins
from tests.compose.stack import WORKERS, Stack, UpSampler

#: From `docker compose up` to every worker ready, at most (a busy 2-core machine; ~1 min idle).
UP_WITHIN_S = 300.0


@pytest.fixture(scope="package")
def compose_stack() -> Iterator[Stack]:
    engine = DockerEngine()
    started = time.monotonic()
    engine.start()
    stack = Stack(engine, f"tradestats-e2e-{uuid.uuid4().hex[:8]}")
    stack.timings["engine start"] = time.monotonic() - started
    volumes_before = _volumes(engine)
    try:
        started = time.monotonic()
        ensure_standins(engine)
        stack.timings["stand-in images"] = time.monotonic() - started
        stack.timed("build", "build")
        stack.timed("up", "up", "--detach")
        ready = stack.wait_ready(WORKERS, within=UP_WITHIN_S)
        stack.timings["up to all ready"] = stack.timings["up"] + max(ready.values())
        yield stack
    finally:
        try:
            _take_down(stack, volumes_before)
        finally:
            print("compose stack timings (s): " + json.dumps(_rounded(stack.timings)))
            engine.stop()


@pytest.fixture(scope="package")
def up_sampler(compose_stack: Stack) -> Iterator[UpSampler]:
    """Prometheus' ``up`` of every worker, sampled every second while the package's tests run."""
    sampler = UpSampler(compose_stack).start()
    yield sampler
    sampler.stop()


def _take_down(stack: Stack, volumes_before: set[str]) -> None:
    """``down --volumes``; then nothing of the project may be left (issue 10, step 6)."""
    stack.timed("down --volumes", "down", "--volumes", "--remove-orphans")
    label = f"label=com.docker.compose.project={stack.project}"
    containers = stack.engine.docker("ps", "--all", "--quiet", "--filter", label).stdout.split()
    networks = stack.engine.docker("network", "ls", "--quiet", "--filter", label).stdout.split()
    volumes = _volumes(stack.engine) - volumes_before
    assert not containers, f"containers left behind: {containers}"
    assert not networks, f"networks left behind: {networks}"
    assert not volumes, f"volumes left behind: {sorted(volumes)}"


def _volumes(engine: DockerEngine) -> set[str]:
    return set(engine.docker("volume", "ls", "--quiet").stdout.split())


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {name: round(seconds, 1) for name, seconds in timings.items()}
