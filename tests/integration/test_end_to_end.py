"""The worker end to end on the real broker, checked against the brute-force oracle."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import Broker
from tests.integration.harness import (
    Produced,
    Topics,
    Worker,
    check_windows,
    consume,
    consume_quiet,
    create_topics,
    produce,
    worker_env,
)
from tests.oracle import Record
from tests.unit.test_trades import CASES
from tradestats.core.trades import Reason
from tradestats.loadgen import TradeGenerator, tickers

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]

PARTITIONS = 4


def trade(ticker: str, price: float, size: int, kind: str, timestamp: int) -> Produced:
    value = json.dumps({"type": kind, "ticker": ticker, "price": price, "size": size})
    return Produced(ticker.encode(), value.encode(), timestamp)


def scripted_trades(t0: int) -> list[Produced]:
    """Edge cases by design; each comment says what it exercises."""
    return [
        # window edges: 0 and 999 share pane 0; 1000 opens the next pane; 4999/5000 straddle
        trade("MMM", 10.0, 1, "ASK", t0),
        trade("MMM", 11.0, 2, "ASK", t0 + 999),
        trade("MMM", 12.0, 3, "ASK", t0 + 1000),
        trade("MMM", 13.0, 4, "ASK", t0 + 1000),  # equal timestamps
        trade("MMM", 14.0, 0, "ASK", t0 + 4999),
        trade("MMM", 15.0, 5, "BID", t0 + 5000),  # a second type: MIXED windows
        # only BID, and only size 0 (VWAP null)
        trade("ABT", 20.5, 0, "BID", t0 + 200),
        trade("ABT", 21.5, 0, "BID", t0 + 2200),
        # out of order: 3500 arrives after 6000 -> windows starting <= 1000 are closed
        trade("ABBV", 30.0, 7, "ASK", t0 + 6000),
        trade("ABBV", 31.0, 8, "ASK", t0 + 3500),  # partly late: only windows 2000, 3000
        trade("ABBV", 32.0, 9, "ASK", t0 + 9000),
        trade("ABBV", 33.0, 1, "ASK", t0 + 500),  # fully late: dead-lettered as "late"
        trade("ACN", 40.0, 3, "BID", t0 + 7000),
        trade("ACN", 41.0, 4, "ASK", t0 + 7001),
    ]


def bad_records(t0: int) -> list[tuple[Produced, Reason]]:
    """Every invalid kind the validator knows, spread over the partitions."""
    return [
        (Produced(key, value, t0 + 3000 + i, partition=i % PARTITIONS), reason)
        for i, (key, value, reason) in enumerate(CASES)
    ]


def random_trades(t0: int, count: int, seed: int) -> list[Produced]:
    """Loadgen trades with timestamps mostly increasing and sometimes seconds behind."""
    rng = random.Random(seed)
    generator = iter(TradeGenerator(tickers(12), seed=seed))
    produced = []
    clock = t0
    for _ in range(count):
        clock += rng.choice([0, 1, 3, 10, 40])
        lag = rng.choice([0, 0, 0, 0, 0, 250, 1500, 4000, 7000])
        t = next(generator)
        produced.append(trade(t.ticker, t.price, t.size, t.type, clock - lag))
    return produced


def start_worker(tmp_path: Path, name: str, env: dict[str, str]) -> Worker:
    return Worker(name, env, tmp_path / name, tmp_path / f"{name}.log").start()


async def test_known_trades_and_bad_records_give_exact_windows_and_dead_letters(
    kafka: Broker, tmp_path: Path
) -> None:
    topics = Topics.unique("e2e")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    t0 = (int(time.time() * 1000) // 10_000) * 10_000 - 120_000
    bad = bad_records(t0)
    inputs = await produce(
        kafka.bootstrap_servers,
        topics.trades,
        [*scripted_trades(t0), *[p for p, _ in bad], *random_trades(t0 + 20_000, 3000, seed=3)],
    )
    worker = start_worker(tmp_path, "w0", worker_env(kafka.bootstrap_servers, topics, PARTITIONS))
    try:
        worker.wait_ready()
        from tests.oracle import expected_windows

        expected = expected_windows(inputs, 5000, 1000)
        rejected = len(expected.invalid) + len(expected.late)
        assert len(expected.invalid) == len(bad)
        assert len(expected.late) >= 1
        stats = await consume(
            kafka.bootstrap_servers,
            topics.stats,
            done=lambda records: len(records) >= len(expected.windows),
            within=60,
        )
        await asyncio.sleep(2)  # anything emitted twice would arrive by now
        stats = await consume_quiet(kafka.bootstrap_servers, topics.stats)
        verdict = check_windows(inputs, stats, exactly_once=True, output_partitions=PARTITIONS)
        assert verdict.windows == len(expected.windows)

        dead = await consume(
            kafka.bootstrap_servers, topics.dlq, done=lambda r: len(r) >= rejected, within=30
        )
        check_dead_letters(dead, expected.invalid, expected.late, bad, topics.trades)

        metrics = worker.metrics()
        assert metrics["tradestats_trades_processed_total"] == len(inputs) - rejected
        assert metrics["tradestats_trades_late_total"] == len(expected.late)
        for reason in Reason:
            want = sum(1 for _, r in bad if r is reason) + (
                len(expected.late) if reason is Reason.LATE else 0
            )
            assert metrics[f'tradestats_trades_dead_lettered_total{{reason="{reason}"}}'] == want
        assert metrics["tradestats_windows_emitted_total"] == len(expected.windows)
        newest: dict[str, dict] = {}
        for record in stats:  # in output order: per ticker (one partition), oldest window first
            value = json.loads(record.value)
            newest[value["ticker"]] = value
        for ticker, value in newest.items():
            gauge = metrics[f'tradestats_window_avg_price{{ticker="{ticker}"}}']
            assert gauge == pytest.approx(value["avgPrice"], rel=1e-12)
    finally:
        worker.stop_quietly()


def check_dead_letters(
    dead: list, invalid: list[Record], late: list[Record], bad: list, source: str
) -> None:
    """Exactly the rejected records, byte for byte, each once, with reason and origin."""
    by_origin = {}
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        origin = (
            int(headers["tradestats.source.partition"]),
            int(headers["tradestats.source.offset"]),
        )
        assert origin not in by_origin, f"dead letter {origin} twice"
        assert headers["tradestats.source.topic"] == source
        by_origin[origin] = (record, headers)
    expected = {(r.partition, r.offset): r for r in [*invalid, *late]}
    assert by_origin.keys() == expected.keys()
    reasons = {(p.key, p.value): reason for p, reason in bad}
    for origin, source_record in expected.items():
        record, headers = by_origin[origin]
        assert (record.key, record.value) == (source_record.key, source_record.value)
        assert record.timestamp == source_record.timestamp
        assert headers["tradestats.error"]
        if source_record in late:
            assert headers["tradestats.reason"] == "late"
        else:
            assert headers["tradestats.reason"] == reasons[(record.key, record.value)]


async def test_sigkill_mid_stream_and_restart_on_the_same_data_dir_stays_exact(
    kafka: Broker, tmp_path: Path
) -> None:
    topics = Topics.unique("kill")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    env = worker_env(kafka.bootstrap_servers, topics, PARTITIONS)
    t0 = int(time.time() * 1000)
    trades = random_trades(t0, 24_000, seed=11)
    worker = start_worker(tmp_path, "w0", env)
    inputs: list[Record] = []
    try:
        await asyncio.to_thread(worker.wait_ready)

        async def feed() -> None:
            for start in range(0, len(trades), 2000):  # ~8 s of steady input
                inputs.extend(
                    await produce(
                        kafka.bootstrap_servers, topics.trades, trades[start : start + 2000]
                    )
                )
                await asyncio.sleep(0.6)

        feeding = asyncio.create_task(feed())
        await consume(
            kafka.bootstrap_servers, topics.stats, done=lambda r: len(r) >= 800, within=60
        )
        assert not feeding.done(), "the kill must come while input is still arriving"
        worker.kill()
        await asyncio.sleep(1)
        worker.start()
        await asyncio.to_thread(worker.wait_ready)
        await feeding
        from tests.oracle import expected_windows

        expected = expected_windows(inputs, 5000, 1000)
        await consume(
            kafka.bootstrap_servers,
            topics.stats,
            done=lambda r: len({x.key for x in r}) >= len(expected.windows),
            within=90,
        )
        stats = await consume_quiet(kafka.bootstrap_servers, topics.stats)
        verdict = check_windows(inputs, stats, exactly_once=False, output_partitions=PARTITIONS)
        assert verdict.windows == len(expected.windows)
        restored = re.findall(r"state loaded .* last offset (-?\d+)", worker.log_tail(400))
        assert any(int(offset) >= 0 for offset in restored), "the restart found no local state"
    finally:
        worker.stop_quietly()


async def test_commits_keep_up_with_processing(kafka: Broker, tmp_path: Path) -> None:
    """Committed offsets reach the end of the input soon after it is processed (a batch per
    commit would take minutes here: faust's own gap bookkeeping did that)."""
    topics = Topics.unique("commit")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    inputs = await produce(
        kafka.bootstrap_servers, topics.trades, random_trades(int(time.time() * 1000), 200_000, 2)
    )
    worker = start_worker(tmp_path, "w0", worker_env(kafka.bootstrap_servers, topics, PARTITIONS))
    ends = {}
    for record in inputs:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await asyncio.to_thread(worker.wait_ready)
        deadline = time.monotonic() + 60
        committed: dict[int, int] = {}
        while committed != ends and time.monotonic() < deadline:
            await asyncio.sleep(1)
            offsets = await admin.list_consumer_group_offsets(topics.app_id)
            committed = {
                tp.partition: meta.offset
                for tp, meta in offsets.items()
                if tp.topic == topics.trades
            }
        assert committed == ends, (committed, ends)
        assert worker.metrics()["tradestats_trades_processed_total"] > 0
    finally:
        await admin.close()
        worker.stop_quietly()


async def test_a_maximal_bad_record_is_dead_lettered_whole(kafka: Broker, tmp_path: Path) -> None:
    """The largest record the input topic accepts still fits in the dead-letter topic, with
    its headers: it must not crash the worker into a restart loop."""
    topics = Topics.unique("huge")
    await create_topics(kafka.bootstrap_servers, [topics.trades], 1)
    value = b"\x00" * 1_048_400  # just under the broker's default record limit, not JSON
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, max_request_size=2**21)
    await producer.start()
    try:
        await producer.send_and_wait(topics.trades, value, key=b"MMM")
        await producer.send_and_wait(
            topics.trades, trade("MMM", 1.0, 1, "ASK", int(time.time() * 1000)).value, key=b"MMM"
        )
    finally:
        await producer.stop()
    worker = start_worker(tmp_path, "w0", worker_env(kafka.bootstrap_servers, topics, 1))
    try:
        await asyncio.to_thread(worker.wait_ready)
        dead = await consume(
            kafka.bootstrap_servers, topics.dlq, done=lambda r: len(r) > 0, within=60
        )
        assert dead[0].value == value
        assert dict(dead[0].headers)["tradestats.reason"] == b"not_json"
        stats = await consume(
            kafka.bootstrap_servers, topics.stats, done=lambda r: len(r) > 0, within=60
        )
        assert stats, "the valid trade after it was aggregated"
        assert worker.alive()
    finally:
        worker.stop_quietly()
