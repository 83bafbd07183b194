"""The command line: config errors, the faust way of starting the worker, the load generator,
and update-mode emission end to end."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.integration.harness import (
    Topics,
    Worker,
    consume,
    consume_quiet,
    create_topics,
    free_port,
    produce,
    worker_env,
)
from tests.integration.test_end_to_end import random_trades
from tests.oracle import Record, assert_window_values_match, expected_windows, window_value
from tradestats.core.codec import decode_windowed_key

pytestmark = pytest.mark.broker


def run(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradestats", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_bad_configuration_names_every_bad_variable_and_exits_2() -> None:
    done = run(
        ["worker"],
        {"WINDOW_SIZE_MS": "abc", "WEB_PORT": "99999", "EMIT_MODE": "sometimes"},
        timeout=30,
    )
    assert done.returncode == 2
    for name in ("WINDOW_SIZE_MS", "WEB_PORT", "EMIT_MODE"):
        assert name in done.stderr
    assert "Traceback" not in done.stderr


def test_the_faust_command_runs_the_same_worker(kafka: Broker, tmp_path: Path) -> None:
    topics = Topics.unique("faust")
    port = free_port()
    env = {
        **os.environ,
        **worker_env(kafka.bootstrap_servers, topics, 2),
        "DATA_DIR": str(tmp_path / "data"),
        "WEB_PORT": str(port),
        "WEB_HOST": "127.0.0.1",
    }
    (tmp_path / "data").mkdir()
    faust = Path(sys.executable).parent / "faust"
    with (tmp_path / "faust.log").open("wb") as log:
        process = subprocess.Popen(
            [str(faust), "-A", "tradestats.app", "worker", "-l", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = Worker("faust", {}, tmp_path / "data", tmp_path / "faust.log", port=port)
    worker.process = process
    worker.started_at = time.monotonic()
    try:
        worker.wait_ready()
        assert worker.get("/health")[0] == 200
        assert "tradestats_trades_processed_total" in worker.metrics()
    finally:
        code, _ = worker.terminate()
    assert code == 0


@pytest.mark.asyncio
async def test_loadgen_produces_the_requested_count_with_a_summary(kafka: Broker) -> None:
    """Into a topic an operator created with a record limit (16 KiB) below the producer's
    batch size: its batches are sized to fit, none is refused."""
    topics = Topics.unique("loadgen")
    await create_topics(kafka.bootstrap_servers, [topics.trades], 3, {"max.message.bytes": "16384"})
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "TRADES_TOPIC": topics.trades}
    done = await asyncio.to_thread(
        run, ["loadgen", "--rate", "0", "--count", "3000", "--tickers", "12", "--seed", "4"], env
    )
    assert done.returncode == 0, done.stderr
    assert "sent 3000 trades" in done.stderr
    assert "over 12 tickers" in done.stderr
    assert "3000/3000" in done.stderr  # the progress bar reached the end
    records = await consume_quiet(kafka.bootstrap_servers, topics.trades, quiet=2)
    assert len(records) == 3000
    parsed = [json.loads(r.value) for r in records]
    assert all(r.key == p["ticker"].encode() for r, p in zip(records, parsed, strict=True))
    assert len({p["ticker"] for p in parsed}) == 12
    assert all(0 <= p["size"] <= 99 and p["price"] > 0 for p in parsed)
    assert (
        expected_windows(
            [Record(r.partition, r.offset, r.timestamp, r.key, r.value) for r in records],
            5000,
            1000,
        ).invalid
        == []
    )


@pytest.mark.asyncio
async def test_update_mode_emits_coalesced_changes_that_end_at_the_exact_value(
    kafka: Broker, tmp_path: Path
) -> None:
    topics = Topics.unique("update")
    await create_topics(kafka.bootstrap_servers, [topics.trades], 2)
    env = worker_env(kafka.bootstrap_servers, topics, 2, emit_mode="update", commit_interval_ms=300)
    worker = Worker("w", env, tmp_path / "w", tmp_path / "w.log").start()
    inputs: list[Record] = []
    try:
        await asyncio.to_thread(worker.wait_ready)
        trades = random_trades(int(time.time() * 1000), 4000, seed=9)
        for start in range(0, len(trades), 500):  # spread over several commits
            inputs.extend(
                await produce(kafka.bootstrap_servers, topics.trades, trades[start : start + 500])
            )
            await asyncio.sleep(0.3)
        expected = expected_windows(inputs, 5000, 1000)
        await consume(
            kafka.bootstrap_servers,
            topics.stats,
            done=lambda r: len(r) >= len(expected.windows),
            within=60,
        )
        await asyncio.sleep(2)
        updates = await consume_quiet(kafka.bootstrap_servers, topics.stats)
    finally:
        worker.stop_quietly()
    latest: dict[tuple[str, int], dict] = {}
    emissions: Counter[tuple[str, int]] = Counter()
    for record in updates:
        key = decode_windowed_key(record.key)
        latest[key] = json.loads(record.value)
        emissions[key] += 1
    assert latest.keys() == expected.windows.keys()
    for (ticker, start), trades_in_window in expected.windows.items():
        assert_window_values_match(
            latest[(ticker, start)], window_value(ticker, start, 5000, trades_in_window)
        )
    # coalesced: far fewer emissions than trade x window updates; some windows updated twice+
    assert sum(emissions.values()) < sum(len(t) for t in expected.windows.values()) / 3
    assert max(emissions.values()) > 1
