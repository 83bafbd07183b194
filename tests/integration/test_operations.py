"""Operating the worker: readiness around a restore, interactive queries across replicas,
graceful SIGTERM, static membership, JSON logs."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.integration.harness import (
    Topics,
    Worker,
    check_windows,
    consume,
    consume_quiet,
    create_topics,
    produce,
    worker_env,
)
from tests.integration.test_end_to_end import random_trades
from tests.oracle import Record, expected_windows

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]

PARTITIONS = 4


def workers(tmp_path: Path, env: dict[str, str], count: int) -> list[Worker]:
    return [
        Worker(f"tradestats-{i}", env, tmp_path / f"data-{i}", tmp_path / f"tradestats-{i}.log")
        for i in range(count)
    ]


async def wait_all_ready(*group: Worker) -> None:
    await asyncio.gather(*(asyncio.to_thread(w.wait_ready, 90) for w in group))


async def test_ready_is_503_while_restoring_then_200(kafka: Broker, tmp_path: Path) -> None:
    """A worker that lost its volume restores from the changelog: /ready says so, then 200."""
    topics = Topics.unique("ready")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    env = worker_env(kafka.bootstrap_servers, topics, PARTITIONS, standby_replicas=0)
    (worker,) = workers(tmp_path, env, 1)
    t0 = int(time.time() * 1000)
    inputs = await produce(
        kafka.bootstrap_servers, topics.trades, random_trades(t0, 20_000, seed=5)
    )
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    await consume(
        kafka.bootstrap_servers,
        topics.stats,
        done=lambda r: len(r) >= len(expected_windows(inputs, 5000, 1000).windows),
        within=60,
    )
    worker.kill()
    # counted after the kill: a checkpoint writes its state after its results are acknowledged
    changelog_records = len(await consume_quiet(kafka.bootstrap_servers, topics.changelog))
    shutil.rmtree(worker.data_dir)  # the emptyDir case: everything comes from the changelog
    worker.start()
    answers = []
    while True:
        try:
            status, body = worker.get("/ready", timeout=1)
        except OSError:
            status, body = 0, "connection refused"
        answers.append((status, body))
        if status == 200:
            break
        assert worker.alive(), worker.log_tail()
        assert time.monotonic() - worker.started_at < 90, answers[-3:]
        await asyncio.sleep(0.05)
    not_ready = [body for status, body in answers if status == 503]
    assert not_ready, f"never saw 503 before 200: {answers[:5]}"
    assert all(body["ready"] is False and body["reason"] for body in not_ready)
    assert answers[-1][1]["ready"] is True
    assert changelog_records > 0
    # the restored state is the one that was lost: nothing is re-aggregated from the input
    metrics = worker.metrics()
    assert metrics["tradestats_trades_processed_total"] == 0
    restored = metrics['tradestats_changelog_records_restored_total{role="active"}']
    assert 0 < restored <= changelog_records
    worker.stop_quietly()


async def test_any_replica_answers_any_ticker_with_the_same_body(
    kafka: Broker, tmp_path: Path
) -> None:
    topics = Topics.unique("iq")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    env = worker_env(kafka.bootstrap_servers, topics, PARTITIONS)
    group = workers(tmp_path, env, 2)
    try:
        for worker in group:
            worker.start()
        await wait_all_ready(*group)
        t0 = int(time.time() * 1000) - 20_000
        inputs = await produce(
            kafka.bootstrap_servers, topics.trades, random_trades(t0, 3000, seed=8)
        )
        tickers = sorted({r.key.decode() for r in inputs if r.key})
        expected = expected_windows(inputs, 5000, 1000)
        await consume(
            kafka.bootstrap_servers,
            topics.stats,
            done=lambda r: len(r) >= len(expected.windows),
            within=60,
        )
        await asyncio.sleep(1)
        owners = set()
        for ticker in tickers:
            answers = [worker.get(f"/stats/{ticker}") for worker in group]
            assert answers[0] == answers[1], ticker
            status, body = answers[0]
            assert status == 200, body
            assert body["ticker"] == ticker
            assert body["windows"], body
            assert all(w["ticker"] == ticker for w in body["windows"])
            starts = [w["windowStart"] for w in body["windows"]]
            assert starts == sorted(starts, reverse=True)
            owners.add(body["partition"])
        assert len(owners) > 1, "tickers should spread over partitions of both workers"
        for worker in group:
            assert worker.get("/stats/NO_SUCH")[0] == 404
            assert worker.get("/stats/bad%20ticker")[0] == 400
            assert worker.get("/stats/" + "X" * 33)[0] == 400
            assert worker.get("/table/trade-state/MMM")[0] == 404  # faust's raw table pages: off
    finally:
        for worker in group:
            worker.stop_quietly()


async def test_sigterm_one_of_two_workers_mid_stream_loses_nothing(
    kafka: Broker, tmp_path: Path
) -> None:
    topics = Topics.unique("term")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    env = worker_env(kafka.bootstrap_servers, topics, PARTITIONS)
    group = workers(tmp_path, env, 2)
    trades = random_trades(int(time.time() * 1000), 16_000, seed=21)
    inputs: list[Record] = []
    try:
        for worker in group:
            worker.start()
        await wait_all_ready(*group)

        async def feed() -> None:
            for start in range(0, len(trades), 1000):
                inputs.extend(
                    await produce(
                        kafka.bootstrap_servers, topics.trades, trades[start : start + 1000]
                    )
                )
                await asyncio.sleep(0.4)

        feeding = asyncio.create_task(feed())
        await asyncio.sleep(2)
        code, seconds = await asyncio.to_thread(group[1].terminate, 30)
        assert code == 0, group[1].log_tail()
        assert seconds < 15, f"graceful shutdown took {seconds:.1f} s"
        assert not feeding.done()
        group[1].start()
        await asyncio.to_thread(group[1].wait_ready, 90)
        await feeding
        expected = expected_windows(inputs, 5000, 1000)
        await consume(
            kafka.bootstrap_servers,
            topics.stats,
            done=lambda r: len({x.key for x in r}) >= len(expected.windows),
            within=90,
        )
        stats = await consume_quiet(kafka.bootstrap_servers, topics.stats)
        check_windows(inputs, stats, exactly_once=True)
    finally:
        for worker in group:
            worker.stop_quietly()


async def test_static_member_restart_does_not_rebalance_the_others(
    kafka: Broker, tmp_path: Path
) -> None:
    topics = Topics.unique("static")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    env = worker_env(kafka.bootstrap_servers, topics, PARTITIONS)
    group = workers(tmp_path, env, 2)
    try:
        for worker in group:
            worker.start()
        await wait_all_ready(*group)
        await asyncio.sleep(3)  # let the group settle after the second join
        before = group[0].metrics()["tradestats_rebalances_total"]
        partitions_before = group[1].get("/ready")[1]["partitions"]
        code, _ = await asyncio.to_thread(group[1].terminate, 30)
        assert code == 0
        group[1].start()
        await asyncio.to_thread(group[1].wait_ready, 90)
        await asyncio.sleep(2)
        assert group[0].metrics()["tradestats_rebalances_total"] == before, group[0].log_tail()
        assert group[1].get("/ready")[1]["partitions"] == partitions_before
    finally:
        for worker in group:
            worker.stop_quietly()


async def test_json_logs_are_one_object_per_line(kafka: Broker, tmp_path: Path) -> None:
    topics = Topics.unique("json")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    env = worker_env(kafka.bootstrap_servers, topics, PARTITIONS, log_format="json")
    (worker,) = workers(tmp_path, env, 1)
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    await produce(kafka.bootstrap_servers, topics.trades, random_trades(0, 50, seed=1))  # late
    await consume(kafka.bootstrap_servers, topics.dlq, done=lambda r: len(r) > 0, within=30)
    code, _ = await asyncio.to_thread(worker.terminate, 30)
    assert code == 0
    lines = [line for line in worker.log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines if not line.startswith("===== start")]
    assert len(entries) > 10
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
    assert any("partition" in entry and "offset" in entry for entry in entries)


async def test_a_frozen_worker_fails_its_liveness_probe(kafka: Broker, tmp_path: Path) -> None:
    """A wedged event loop cannot answer /health: the probe times out, Kubernetes restarts it."""
    topics = Topics.unique("frozen")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    (worker,) = workers(tmp_path, worker_env(kafka.bootstrap_servers, topics, PARTITIONS), 1)
    worker.start()
    try:
        await asyncio.to_thread(worker.wait_ready)
        assert worker.get("/health") == (200, {"status": "ok"})
        assert worker.process is not None
        worker.process.send_signal(signal.SIGSTOP)
        with pytest.raises(TimeoutError):
            worker.get("/health", timeout=2)
        worker.process.send_signal(signal.SIGCONT)
        assert worker.get("/health")[0] == 200
    finally:
        worker.stop_quietly()
