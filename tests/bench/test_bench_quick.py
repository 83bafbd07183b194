"""The benchmark suite's quick form, end to end on the session broker.

It asserts that the suite works — every contender ran, its output matched the oracle, the
report and plots were written — and never asserts a timing: this machine is shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Broker

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTENDERS = {
    "tradestats",
    "faust-textbook",
    "quixstreams",
    "kafka-streams",
    "kafka-streams-suppress",
    "bare-aiokafka",
}


@pytest.mark.broker
@pytest.mark.timeout(600)  # the first run on a machine builds the jar and the Quix venv
def test_quick_benchmark_runs_every_contender_correctly(kafka: Broker, tmp_path: Path) -> None:
    report, results = tmp_path / "benchmarks.md", tmp_path / "benchmarks.json"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--work-dir",
            str(tmp_path / "work"),
            "--report",
            str(report),
            "--json",
            str(results),
            "--plots-dir",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=570,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert results.exists(), output[-5000:]
    data = json.loads(results.read_text())
    by_name = {c["name"]: c for c in data["contenders"]}
    assert set(by_name) == CONTENDERS, output[-5000:]
    for name, contender in by_name.items():
        assert not contender["errors"], (name, contender["errors"])
        assert contender["throughput"]["trades"] == data["dataset"]["records"], name
        if contender["emission"] == "none":
            assert contender["correctness"] is None, name
            continue
        assert contender["correctness"]["passed"], (name, contender["correctness"]["detail"])
        assert contender["correctness"]["windows_checked"] > 0, name
        assert contender["latency"]["windows"] > 0, (name, contender["latency"])
    assert by_name["faust-textbook"]["throughput"]["changelog_records"] > 0
    assert completed.returncode == 0, output[-5000:]
    text = report.read_text()
    for name in CONTENDERS:
        assert name in text
    assert (tmp_path / "benchmarks-throughput.png").stat().st_size > 0
    assert (tmp_path / "benchmarks-latency.png").stat().st_size > 0
