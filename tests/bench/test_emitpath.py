"""The in-process emit path benchmark measures what the worker runs: its window results, as the
output records the producer gets, and its collector settings."""

from __future__ import annotations

import gc
import subprocess
import sys

from bench import emitpath
from bench.emitpath import REPO_ROOT, STAGES
from tradestats.core.codec import decode_windowed_key
from tradestats.service import worker


def test_a_thin_run_times_every_stage_and_counts_the_windows_it_closed() -> None:
    """In a fresh interpreter, as ``--against`` runs each tree: 2,000 trades of 1,000 tickers
    at 1,000 trades/s, from 1,000 s on, close one window, [996 s, 1,001 s): one result per
    ticker that traded in the first second."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.emitpath", "--density=1", "--rate=1000", "--trades=2000"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stdout.splitlines()
    assert "2,000 trades, 1,000 tickers" in lines[0], done.stdout
    results = int(lines[0].split(": ")[2].split(" window results")[0].replace(",", ""))
    first_second = {r.key for r in emitpath._records(2000, 1000, 1000) if r.timestamp < 1_001_000}
    assert results == len(first_second), done.stdout
    for stage in STAGES:
        assert any(line.strip().startswith(stage) for line in lines[1:]), (stage, done.stdout)


def test_the_results_are_the_output_records_the_producer_gets() -> None:
    from tradestats.core.partition import PartitionState
    from tradestats.core.windows import WindowSpec

    close, records_of = emitpath._closer()
    state = PartitionState(WindowSpec(5000, 1000))
    state.process(emitpath._records(3000, 30, 1000))
    records = records_of(close(state))
    assert records, "three seconds of trades close windows"
    for key, value, timestamp, headers, *_ in records:
        ticker, start = decode_windowed_key(key)
        assert value.startswith(b'{"ticker":"' + ticker.encode())
        assert (timestamp, headers) == (start + 5000 - 1, None)


def test_the_collector_is_set_as_the_worker_sets_it() -> None:
    before = gc.get_threshold()
    try:
        emitpath._worker_collector()
        assert gc.get_threshold() == worker._GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)
