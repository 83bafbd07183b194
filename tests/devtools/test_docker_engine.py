"""The machine's shared Docker engine: a second user adopts it and never stops it.

The engine may already run (another session, the compose stack's fixture); then this test
only adopts it. If it cannot start, the test fails: the engine is never skipped.
"""

from __future__ import annotations

import pytest

from devtools.docker import DockerEngine

pytestmark = pytest.mark.docker


def test_a_second_user_adopts_the_running_engine_and_leaves_it_running() -> None:
    first = DockerEngine().start()
    try:
        second = DockerEngine().start()
        assert not second.started_here
        assert second.pids() == first.pids()
        assert second.stop() is False, "an adopted engine was stopped"
        assert first.is_running()
        version = first.docker("version", "--format", "{{.Server.Version}}").stdout
        assert version.startswith("20.10"), version
    finally:
        stopped = first.stop()
    if stopped:  # this test started it: gone, dockerd and containerd, by their recorded pids
        assert not first.pids()
    else:  # someone else's engine, or one still in use
        assert first.is_running()
