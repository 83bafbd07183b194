"""The recovery benchmark (``python -m bench.recovery``) in its quick form, end to end.

It runs as a subprocess against the session broker, exactly as a person would run it, and
checks the shape of what it produced and the one relation that holds on any machine: a cold
restart (empty data directory) replays more changelog records than a warm one. It asserts no
timing: the timings are the benchmark's output, not its correctness.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.recovery.plan import QUICK
from bench.recovery.results import KINDS, load_results
from tests.conftest import Broker

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_quick_recovery_benchmark_runs_end_to_end(kafka: Broker, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    out = tmp_path / "docs"
    command = [
        sys.executable,
        "-m",
        "bench.recovery",
        "--quick",
        "--work-dir",
        str(tmp_path / "work"),
        "--out",
        str(out),
        "--results",
        str(results),
    ]
    if kafka.local is not None:  # lets the benchmark watch the log cleaner finish
        command += ["--broker-log-dir", str(kafka.local.data_dir)]
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=280, check=False
    )
    assert done.returncode == 0, f"benchmark failed:\n{done.stderr[-6000:]}"
    print(done.stderr[-3000:])

    run = load_results(results)
    assert run.quick
    assert [s.state.target_aggregates for s in run.sizes] == list(QUICK.sizes)
    for size in run.sizes:
        state = size.state
        assert state.aggregates == state.target_aggregates, state
        assert state.live_keys == state.tickers + state.partitions  # + one clock per partition
        assert state.changelog_offsets >= state.tickers * state.panes  # a version per pane
        for kind in KINDS:
            restarts = size.of_kind(kind)
            assert len(restarts) == QUICK.repeat, (kind, size.restarts)
            assert all(r.seconds_to_ready > 0 for r in restarts)
        warm = [r.records_replayed for r in size.restarts if r.kind.startswith("warm")]
        cold = [r.records_replayed for r in size.of_kind("cold")]
        assert min(cold) > max(warm), (cold, warm)
        assert min(cold) >= state.live_keys  # at least the latest record of every key
        takeover = size.takeover
        assert takeover is not None
        assert takeover.partitions
        assert takeover.total_seconds > 0
        assert takeover.full_restore_records > 0
        kstreams = size.kstreams  # Kafka Streams restoring the same trades' state
        assert kstreams is not None
        assert kstreams.live_keys > 0
        ks_cold = [r.records_restored for r in kstreams.of_kind("cold")]
        ks_warm = [r.records_restored for r in kstreams.of_kind("warm")]
        assert len(ks_cold) == len(ks_warm) == QUICK.repeat, kstreams.restarts
        assert min(ks_cold) >= kstreams.live_keys > max(ks_warm), kstreams
    assert [s.segment_bytes for s in run.segments] == list(QUICK.segment_sizes)
    for segment in run.segments:
        assert segment.state.aggregates == QUICK.segment_state
        assert len(segment.cold) == QUICK.repeat
        assert min(r.records_replayed for r in segment.cold) >= segment.state.live_keys

    report = (out / "recovery.md").read_text()
    for heading in (
        "## Time to ready and records replayed",
        "## Where the time goes",
        "## Restore rate",
        "## Standby takeover",
        "## Kafka Streams restoring the same state",
        "## Segment size and cold restore",
        "## Machine",
        "## Regenerate",
    ):
        assert heading in report
    for size in run.sizes:
        assert f"| {size.state.aggregates:,} |" in report
    for png in ("recovery-sizes.png", "recovery-phases.png", "recovery-segments.png"):
        assert (out / png).stat().st_size > 1000
        assert f"]({png})" in report
