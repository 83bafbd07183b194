"""The README's first command: the demo starts a worker and the load generator and shows stats."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.integration.harness import Topics, free_port

pytestmark = pytest.mark.broker


def test_demo_shows_window_results_flowing(kafka: Broker, tmp_path: Path) -> None:
    topics = Topics.unique("demo")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "APP_ID": topics.app_id,
        "TRADES_TOPIC": topics.trades,
        "STATS_TOPIC": topics.stats,
        "DLQ_TOPIC": topics.dlq,
        "WEB_PORT": str(free_port()),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "devtools.demo",
            "--state-dir",
            str(tmp_path),
            # Until 20 results are shown, however slow the machine; the deadline only catches
            # a demo that shows nothing at all.
            "--results",
            "20",
            "--duration",
            "240",
            "--rate",
            "40",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = [line for line in done.stdout.splitlines() if " n=" in line and "avg=" in line]
    logs = {name: (tmp_path / name).read_text()[-2000:] for name in ("loadgen.log", "worker-0.log")}
    assert len(results) >= 20, (done.stdout[-3000:], done.stderr[-2000:], logs)
    assert "worker ready at http://127.0.0.1:" in done.stdout
    assert (tmp_path / "worker-0").is_dir()  # the worker's RocksDB state lives there
