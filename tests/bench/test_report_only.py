"""A run's results read back from their JSON give the same report: ``--report-only`` rewrites
the report (e.g. after a new emit-path profile) without running the sweep again."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.contenders.base import REPO_ROOT
from bench.results import Latency, RunResult, SweepPoint, combine_rounds
from tests.bench.test_rounds import run


def sample_run() -> RunResult:
    tradestats = combine_rounds([run("a", 300.0), run("a", 100.0), run("a", 200.0)])
    tradestats.latency = Latency(200.0, 30.0, 1900, 0, 27.0, 58.0, 58.0)
    point = SweepPoint(
        100.0,
        100,
        {"topic": "t", "records": 1000, "bytes": 1, "windows": 10, "event_seconds": 1.0},
        [tradestats, combine_rounds([run("e", 250.0), run("e", 400.0), run("e", 150.0)])],
    )
    return RunResult(
        "python -m bench", "2026-12-05T21:19:30+00:00", {}, {"partitions": 6}, [point], seconds=9.0
    )


def test_results_read_back_are_the_results_written(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    written = sample_run()
    written.write(path)
    read = RunResult.read(path)
    assert read == written
    assert read.points[0].contenders[0].ratio_to(read.points[0].contenders[1]) == 1.2


def test_report_only_writes_the_report_of_the_stored_results(tmp_path: Path) -> None:
    """The committed ceiling run's JSON gives back its committed report, word for word."""
    report = tmp_path / "benchmarks-ceiling.md"
    results = REPO_ROOT / "bench" / "results" / "benchmarks-ceiling.json"
    with pytest.raises(SystemExit) as exited:
        main(
            [
                *("--report-only", "--json", str(results), "--report", str(report)),
                *("--plots-dir", str(tmp_path)),
            ]
        )
    assert exited.value.code == 0
    assert report.read_text() == (REPO_ROOT / "docs/benchmarks-ceiling.md").read_text()
    assert (tmp_path / "benchmarks-ceiling-throughput.png").stat().st_size > 0
