"""The load generator as a long-running process: SIGTERM stops it cleanly with its summary,
every trade it reports as sent is on the topic, and without a terminal it logs its rate."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.integration.harness import Topics, consume_quiet, create_topics

pytestmark = pytest.mark.broker


def _wait_for_line(log: Path, pattern: str, process: subprocess.Popen[bytes], within: float) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if re.search(pattern, text):
            return text
        assert process.poll() is None, f"loadgen exited {process.returncode}:\n{text}"
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} after {within:g} s:\n{log.read_text()}")


def run_until_signal(env: dict[str, str], log: Path, signum: signal.Signals) -> tuple[int, str]:
    """Start the load generator, wait for its first rate line, signal it: (exit code, log)."""
    args = ["loadgen", "--rate", "200", "--no-progress", "--log-every", "0.5"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tradestats", *args], env=env, stdout=out, stderr=out
        )
    try:
        text = _wait_for_line(log, r'"message": "sent \d+ trades, \d+ trades/s', process, 60)
        assert '"logger": "tradestats.loadgen"' in text  # the workers' JSON log format
        process.send_signal(signum)
        return process.wait(30), log.read_text()
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.asyncio
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_stops_it_with_a_summary_and_every_trade_acknowledged(
    kafka: Broker, tmp_path: Path, signum: signal.Signals
) -> None:
    topics = Topics.unique("loadgen-stop")
    await create_topics(kafka.bootstrap_servers, [topics.trades], 2)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "TRADES_TOPIC": topics.trades,
        "LOG_FORMAT": "json",
    }
    code, text = await asyncio.to_thread(run_until_signal, env, tmp_path / "loadgen.log", signum)
    assert code == 0, text
    summary = re.search(r"sent (\d+) trades .* over 10 tickers", text)
    assert summary, text
    records = await consume_quiet(kafka.bootstrap_servers, topics.trades, quiet=2)
    assert len(records) == int(summary.group(1)) > 0
