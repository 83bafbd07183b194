"""The bulk changelog restore against the real broker, with real workers.

Every local copy of a partition - the one its owner wrote checkpoint by checkpoint, the one a
new owner restored from an empty volume, the standby copies - must hold exactly what the
changelog holds: the latest value of every key, and the changelog's last offset as the offset
faust resumes from. And while a worker restores, ``/health`` answers and ``/ready`` counts down.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import rocksdict
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import Broker
from tests.integration.harness import (
    Produced,
    Topics,
    Worker,
    consume_quiet,
    create_topics,
    produce,
    worker_env,
)
from tests.integration.test_end_to_end import trade
from tests.integration.test_operations import wait_all_ready, workers
from tests.scenarios.statefulset import parse_recoveries
from tradestats.service.store import CheckpointStore

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]

PARTITIONS = 4
STANDBY_REMAINING = "tradestats_standby_records_remaining"
ACTIVE_RESTORED = 'tradestats_changelog_records_restored_total{role="active"}'
#: Nothing is idle-closed during a test: the changelog changes only when trades come.
_NO_IDLE_CLOSE = 3_600_000


def pane_of_trades(t0: int, pane: int, tickers: int) -> list[Produced]:
    """One trade per ticker, all in 1 s pane ``pane``: every ticker record is written again."""
    return [
        trade(f"T{i:05d}", 100.0 + i % 50 + pane, 1 + i % 9, "ASK", t0 + pane * 1000 + 500)
        for i in range(tickers)
    ]


async def produce_checkpointed(
    bootstrap: str, topics: Topics, trades: list[Produced], ends: dict[int, int]
) -> None:
    """Produce ``trades`` and wait until the group committed them, i.e. their state changes
    are in the changelog (the worker acks a batch only after its checkpoint)."""
    for record in await produce(bootstrap, topics.trades, trades):
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + 120
        committed: dict[int, int] = {}
        while committed != ends:
            assert time.monotonic() < deadline, f"committed {committed}, input ends {ends}"
            await asyncio.sleep(0.5)
            offsets = await admin.list_consumer_group_offsets(topics.app_id)
            committed = {
                tp.partition: meta.offset
                for tp, meta in offsets.items()
                if tp.topic == topics.trades
            }
    finally:
        await admin.close()


async def changelog_truth(
    bootstrap: str, topics: Topics
) -> dict[int, tuple[dict[bytes, bytes], int]]:
    """Per partition: the latest value of every live key in the changelog, and its last offset."""
    truth: dict[int, tuple[dict[bytes, bytes], int]] = {}
    for record in await consume_quiet(bootstrap, topics.changelog):
        live, _ = truth.get(record.partition, ({}, -1))
        if record.value is None:
            live.pop(record.key, None)
        else:
            live[record.key] = record.value
        truth[record.partition] = (live, record.offset)
    return truth


def local_copy(worker: Worker, partition: int) -> tuple[dict[bytes, bytes], int] | None:
    """A stopped worker's RocksDB database of one partition: its records and stored offset."""
    found = list(worker.data_dir.glob(f"v*/tables/trade-state-{partition}.db"))
    if not found:
        return None
    db = rocksdict.Rdict(
        str(found[0]),
        options=rocksdict.Options(raw_mode=True),
        access_type=rocksdict.AccessType.read_only(),
    )
    try:
        records = {key: value for key, value in db.items() if key != CheckpointStore.offset_key}
        offset = db.get(CheckpointStore.offset_key)
    finally:
        db.close()
    return records, -1 if offset is None else int(offset)


async def wait_standbys_caught_up(*group: Worker) -> None:
    """Until every worker's standby copies show nothing left to read, three polls in a row."""
    deadline = time.monotonic() + 60
    calm = 0
    while calm < 3:
        remaining = [w.metrics()[STANDBY_REMAINING] for w in group]
        calm = calm + 1 if not any(remaining) else 0
        assert time.monotonic() < deadline, f"standby records remaining: {remaining}"
        await asyncio.sleep(0.5)


async def test_warm_cold_and_standby_copies_hold_exactly_the_changelog(
    kafka: Broker, tmp_path: Path
) -> None:
    """tradestats-0 builds the state alone (its copies: checkpoint writes, i.e. a warm store);
    tradestats-1 joins with an empty volume: it restores the partitions it takes in bulk and
    keeps standby copies of the others; more trades follow, which the standbys tail."""
    bootstrap = kafka.bootstrap_servers
    topics = Topics.unique("bulk")
    await create_topics(bootstrap, [topics.trades], PARTITIONS)
    env = worker_env(
        bootstrap, topics, PARTITIONS, standby_replicas=1, window_idle_close_ms=_NO_IDLE_CLOSE
    )
    first, second = workers(tmp_path, env, 2)
    t0 = (int(time.time() * 1000) // 1000) * 1000 - 60_000
    ends: dict[int, int] = {}
    try:
        first.start()
        await wait_all_ready(first)
        for pane in range(4):
            await produce_checkpointed(bootstrap, topics, pane_of_trades(t0, pane, 400), ends)
        second.start()
        await wait_all_ready(second)
        for pane in range(4, 6):
            await produce_checkpointed(bootstrap, topics, pane_of_trades(t0, pane, 400), ends)
        await wait_standbys_caught_up(first, second)
        taken = parse_recoveries(second.log_path.read_text())[0]
        for worker in (second, first):  # the owner last: it may checkpoint while it stops
            assert worker.terminate()[0] == 0, worker.log_tail()
    finally:
        first.stop_quietly()
        second.stop_quietly()
    cold = {p for p in taken.partitions if taken.start[p] == -1 and taken.highwater[p] >= 0}
    assert cold, f"tradestats-1 restored no partition from an empty store: {taken}"
    truth = await changelog_truth(bootstrap, topics)
    assert sorted(truth) == list(range(PARTITIONS))
    for partition, (live, last_offset) in sorted(truth.items()):
        for worker in (first, second):
            copy = local_copy(worker, partition)
            assert copy is not None, f"{worker.name} holds no copy of partition {partition}"
            records, offset = copy
            assert offset == last_offset, (worker.name, partition, offset, last_offset)
            missing = live.keys() - records.keys()
            extra = records.keys() - live.keys()
            differ = [k for k in live.keys() & records.keys() if live[k] != records[k]]
            mismatch = {"missing": len(missing), "extra": len(extra), "different": len(differ)}
            assert mismatch == dict.fromkeys(mismatch, 0), (worker.name, partition, mismatch)


async def test_health_answers_and_ready_counts_down_during_a_cold_restore(
    kafka: Broker, tmp_path: Path
) -> None:
    bootstrap = kafka.bootstrap_servers
    topics = Topics.unique("bulkready")
    await create_topics(bootstrap, [topics.trades], PARTITIONS)
    env = worker_env(
        bootstrap, topics, PARTITIONS, standby_replicas=0, window_idle_close_ms=_NO_IDLE_CLOSE
    )
    (worker,) = workers(tmp_path, env, 1)
    t0 = (int(time.time() * 1000) // 1000) * 1000 - 60_000
    ends: dict[int, int] = {}
    try:
        worker.start()
        await wait_all_ready(worker)
        for pane in range(3):
            await produce_checkpointed(bootstrap, topics, pane_of_trades(t0, pane, 20_000), ends)
        written = worker.metrics()["tradestats_changelog_records_total"]
        worker.kill()
        shutil.rmtree(worker.data_dir)
        worker.start()
        health, ready = await asyncio.to_thread(_poll_until_ready, worker)
        metrics = worker.metrics()
    finally:
        worker.stop_quietly()
    answered = [status for status in health if status]
    assert answered, "/health never answered"
    assert set(answered) == {200}, f"/health answers: {sorted(set(health))}"
    to_go = [int(m.group(1)) for r in ready if (m := re.search(r"(\d+) changelog records", r))]
    assert to_go == sorted(to_go, reverse=True), f"/ready counted {to_go}"
    (recovery,) = parse_recoveries(worker.log_path.read_text().split("===== start")[-1])
    assert recovery.total_replayed == written  # nothing compacted yet: every record read
    assert metrics[ACTIVE_RESTORED] == written
    assert metrics["tradestats_recovery_records_remaining"] == 0


def _poll_until_ready(worker: Worker) -> tuple[list[int], list[str]]:
    """/health from a thread of its own and /ready from this one, every 20 ms, until ready:
    the /health statuses (0: no answer yet) and the /ready reasons seen."""
    health: list[int] = []
    done = threading.Event()

    def probe_health() -> None:
        while not done.is_set():
            try:
                health.append(worker.get("/health", timeout=10)[0])
            except OSError:
                health.append(0)  # the web server is not up yet
            time.sleep(0.02)

    prober = threading.Thread(target=probe_health)
    prober.start()
    reasons: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            assert worker.alive(), worker.log_tail()
            try:
                status, body = worker.get("/ready", timeout=10)
            except OSError:
                status, body = 0, {}
            if status == 200:
                return health, reasons
            if isinstance(body, dict) and body.get("reason"):
                reasons.append(str(body["reason"]))
            time.sleep(0.02)
        raise AssertionError(f"not ready after 120 s:\n{worker.log_tail()}")
    finally:
        done.set()
        prober.join()
