"""The benchmark suite's quick form, end to end on the session broker.

It asserts that the suite works — every contender ran at both points of the density sweep,
its output matched the oracle, the latency phase measured, the report and plots were written —
and never asserts a timing: this machine is shared.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
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


#: The first run on a machine builds the jar and the Quix venv; a loaded machine runs every
#: contender several times slower. Generous: the benchmark fails by itself on a real stall.
DEADLINE_SECONDS = 1500


@pytest.mark.broker
@pytest.mark.timeout(DEADLINE_SECONDS + 60)
def test_quick_benchmark_runs_every_contender_correctly(kafka: Broker, tmp_path: Path) -> None:
    report, results = tmp_path / "benchmarks.md", tmp_path / "benchmarks.json"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    completed = run_quick_benchmark(
        [
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
        env,
    )
    output = completed.stdout + completed.stderr
    assert results.exists(), output[-5000:]
    data = json.loads(results.read_text())
    assert [p["density"] for p in data["points"]] == [0.1, 100.0], output[-5000:]
    for point in data["points"]:
        by_name = {c["name"]: c for c in point["contenders"]}
        assert set(by_name) == CONTENDERS, output[-5000:]
        assert point["dataset"]["windows"] > 0, point["dataset"]
        for name, contender in by_name.items():
            where = (point["density"], name)
            assert not contender["errors"], (where, contender["errors"])
            throughput = contender["throughput"]
            assert throughput["trades"] == point["dataset"]["records"], where
            assert throughput["windows"] == point["dataset"]["windows"], where
            if contender["emission"] == "none":
                assert contender["correctness"] is None, where
                continue
            assert contender["correctness"]["passed"], (where, contender["correctness"]["detail"])
            assert contender["correctness"]["windows_checked"] > 0, where
        assert by_name["faust-textbook"]["throughput"]["changelog_records"] > 0
    latency = {c["name"]: c for c in data["latency"]}
    assert set(latency) == CONTENDERS - {"bare-aiokafka"}, output[-5000:]
    for name, contender in latency.items():
        assert not contender["errors"], (name, contender["errors"])
        assert contender["latency"]["windows"] > 0, (name, contender["latency"])
    assert completed.returncode == 0, output[-5000:]
    text = report.read_text()
    for name in CONTENDERS:
        assert name in text
    assert (tmp_path / "benchmarks-throughput.png").stat().st_size > 0
    assert (tmp_path / "benchmarks-latency.png").stat().st_size > 0


@pytest.mark.broker
@pytest.mark.timeout(DEADLINE_SECONDS + 60)
def test_rounds_run_each_contender_in_turn_and_report_every_round(
    kafka: Broker, tmp_path: Path
) -> None:
    report, results = tmp_path / "pairs.md", tmp_path / "pairs.json"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    completed = run_quick_benchmark(
        [
            *("--quick", "--only", "a,e", "--densities", "100", "--rounds", "3", "--no-latency"),
            *("--work-dir", str(tmp_path / "work"), "--report", str(report)),
            *("--json", str(results), "--plots-dir", str(tmp_path)),
        ],
        env,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-5000:]
    (point,) = json.loads(results.read_text())["points"]
    by_key = {c["key"]: c for c in point["contenders"]}
    assert set(by_key) == {"a", "e"}, output[-5000:]
    for contender in by_key.values():
        rates = [round_["rate"] for round_ in contender["rounds"]]
        assert len(rates) == 3, contender
        assert min(rates) > 0, contender
        assert contender["throughput"]["rate"] == sorted(rates)[1], contender  # the median
        assert contender["ok"], contender
    assert by_key["a"]["correctness"]["passed"], by_key["a"]["correctness"]
    # in turn, every other round reversed, each run in its own group and state directory
    order = re.findall(r"round (\d)/3\] \[(\w) \S+\] [\d,]+ trades in ", output)
    expected = [("1", "a"), ("1", "e"), ("2", "e"), ("2", "a"), ("3", "a"), ("3", "e")]
    assert order == expected, output[-5000:]
    runs = sorted(path.name for path in (tmp_path / "work").glob("*/tradestats/*"))
    assert runs == ["p0-r1", "p0-r2", "p0-r3"], runs
    text = report.read_text()
    assert "| round 1 | round 2 | round 3 | vs (e), per round |" in text, text
    assert (tmp_path / "pairs-throughput.png").stat().st_size > 0
    assert "## Emit latency" not in text  # --no-latency: no empty section, no empty plot
    assert not (tmp_path / "pairs-latency.png").exists()


def run_quick_benchmark(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m bench ARGS``; what it printed if it is still running at the deadline."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "bench", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        printed = b"".join(
            part if isinstance(part, bytes) else part.encode()
            for part in (expired.stdout, expired.stderr)
            if part
        )
        raise AssertionError(
            f"the quick benchmark still running after {DEADLINE_SECONDS} s:\n"
            + printed.decode(errors="replace")[-5000:]
        ) from None


@pytest.mark.broker
@pytest.mark.timeout(600)
def test_sigterm_stops_the_run_with_the_contender_and_broker_it_started(tmp_path: Path) -> None:
    """A benchmark stopped with SIGTERM stops what it started on its way out (the default
    action would leave its contender and its own broker running): its own broker here, since
    it is not given one."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    command = [sys.executable, "-m", "bench", "--quick", "--only", "a", "--no-latency"]
    command += ["--work-dir", str(tmp_path / "work"), "--json", str(tmp_path / "r.json")]
    command += ["--report", str(tmp_path / "r.md"), "--plots-dir", str(tmp_path)]
    log = tmp_path / "bench.log"
    with log.open("w") as out:
        bench = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=out)
    try:
        started: list[psutil.Process] = []
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and bench.poll() is None:
            started = psutil.Process(bench.pid).children(recursive=True)
            if any(p.cmdline()[1:] == ["-m", "tradestats", "worker"] for p in _alive(started)):
                break
            time.sleep(0.5)
        commands = [p.cmdline() for p in _alive(started)]
        assert ["-m", "tradestats", "worker"] in [c[1:] for c in commands], (commands, log)
        assert any(c[0].endswith("java") and "kafka.Kafka" in c for c in commands), commands
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(120) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    finally:
        if bench.poll() is None:  # the test failed before: stop it as a user would
            bench.send_signal(signal.SIGTERM)
            bench.wait(120)
    left = [" ".join(p.cmdline())[:80] for p in _alive(started)]
    assert not left, (left, log.read_text()[-3000:])
    assert "stopped by SIGTERM" in log.read_text()


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                process.cmdline()
                alive.append(process)
        except psutil.Error:
            continue
    return alive
