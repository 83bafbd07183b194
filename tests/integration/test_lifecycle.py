"""The lifecycle a user meets: a fresh deployment, a broker not there yet, restarts after the
input stopped, rebalances. Each test reproduces a defect found by running the service the way
users do (issue 9) and checks every window against the brute-force oracle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from devtools.kafka import LocalKafka
from tests.conftest import Broker
from tests.integration.harness import (
    Produced,
    Topics,
    Worker,
    create_topics,
    free_port,
    produce,
    worker_env,
)
from tests.scenarios.load import SteadyLoad, expect_exact_windows, trade_source

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]

PARTITIONS = 6


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    """Workers a test starts; SIGKILLed at teardown, their log tails printed."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop_quietly()
        print(f"--- {worker.name}\n{worker.log_tail(80)}")


def new_worker(tmp_path: Path, name: str, env: dict[str, str]) -> Worker:
    return Worker(name, env, tmp_path / name, tmp_path / f"{name}.log")


def assert_never_crashed(worker: Worker) -> None:
    assert worker.alive(), f"{worker.name} exited:\n{worker.log_tail()}"
    log = worker.log_path.read_text(errors="replace")
    assert "Crashed reason" not in log, worker.log_tail(120)


async def test_first_start_with_topics_created_beforehand_stays_up(
    kafka: Broker, tmp_path: Path, workers: list[Worker]
) -> None:
    """An init job created input, output and dead-letter topics; the changelog does not exist
    yet. The worker used to crash some 40 s in (NotLeaderForPartitionError on its own sends):
    its producer's metadata lost the output topics once the changelog topic was added."""
    topics = Topics.unique("fresh")
    await create_topics(
        kafka.bootstrap_servers, [topics.trades, topics.stats, topics.dlq], PARTITIONS
    )
    worker = new_worker(tmp_path, "tradestats-0", worker_env(kafka.bootstrap_servers, topics, 6))
    workers.append(worker.start())
    await asyncio.to_thread(worker.wait_ready, 120)
    load = await SteadyLoad(kafka.bootstrap_servers, topics.trades, rate=300, seed=3).start()
    try:
        # Longer than the producer's request timeout (30 s), when stuck batches expired.
        for _ in range(45):
            await load.run_for(1)
            assert_never_crashed(worker)
        await produce(
            kafka.bootstrap_servers, topics.trades, [Produced(b"MMM", b"not json", 1_000)]
        )
        inputs = await load.stop()
    finally:
        await load.close()
    await expect_exact_windows(kafka.bootstrap_servers, topics, inputs, within=120)
    assert_never_crashed(worker)
    dead = worker.metrics()['tradestats_trades_dead_lettered_total{reason="not_json"}']
    assert dead == 1


def thin_backlog(seed: int, count: int = 15_000) -> list[Produced]:
    """2,000 tickers trading every 2 s, stamped in the last 30 s: about 5 window results per
    trade, and read as a backlog they fill the producer's batches at once."""
    now = int(time.time() * 1000)
    source = trade_source(ticker_count=2_000, seed=seed)
    return [Produced(*next(source), now - 30_000 + i) for i in range(count)]


async def test_topics_created_with_a_small_record_limit_get_batches_that_fit(
    kafka: Broker, tmp_path: Path, workers: list[Worker]
) -> None:
    """An operator created the output and changelog topics with ``max.message.bytes`` of
    64 KiB, below the worker's batch size. Each full batch used to be refused as too large,
    and the worker stopped on it: now it reads the limits and builds batches that fit."""
    topics = Topics.unique("small")
    small = {"max.message.bytes": "65536"}
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    await create_topics(kafka.bootstrap_servers, [topics.stats], PARTITIONS, small)
    await create_topics(
        kafka.bootstrap_servers,
        [topics.changelog],
        PARTITIONS,
        {**small, "cleanup.policy": "compact"},
    )
    inputs = await produce(kafka.bootstrap_servers, topics.trades, thin_backlog(seed=7))
    worker = new_worker(tmp_path, "tradestats-0", worker_env(kafka.bootstrap_servers, topics, 6))
    workers.append(worker.start())
    await expect_exact_windows(
        kafka.bootstrap_servers, topics, inputs, within=120, explain=worker.log_tail
    )
    assert_never_crashed(worker)
    assert f"{topics.stats} takes record batches of up to 65536 bytes" in worker.log_text()


async def test_a_record_limit_lowered_while_running_shrinks_the_batches(
    kafka: Broker, tmp_path: Path, workers: list[Worker]
) -> None:
    """The output topic's ``max.message.bytes`` goes down to 32 KiB under a running worker:
    the broker refuses its next full batches as too large, and the worker halves its batches
    for that topic until they fit, sending the refused results again; none is lost."""
    topics = Topics.unique("lowered")
    worker = new_worker(tmp_path, "tradestats-0", worker_env(kafka.bootstrap_servers, topics, 6))
    workers.append(worker.start())
    await asyncio.to_thread(worker.wait_ready, 120)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, topics.stats, {"max.message.bytes": "32768"}
        )
        await admin.alter_configs([resource])
    finally:
        await admin.close()
    inputs = await produce(kafka.bootstrap_servers, topics.trades, thin_backlog(seed=8))
    await expect_exact_windows(
        kafka.bootstrap_servers, topics, inputs, within=120, explain=worker.log_tail
    )
    assert_never_crashed(worker)
    assert "as too large: batches of" in worker.log_text()


async def test_topics_created_by_the_worker_are_read_at_once(
    kafka: Broker, tmp_path: Path, workers: list[Worker]
) -> None:
    """No topic exists: the worker creates them all before it subscribes, so it holds its
    input partitions from the start (it used to wait five minutes for a metadata refresh),
    and /ready means the input partitions are assigned."""
    topics = Topics.unique("nothing")
    worker = new_worker(tmp_path, "tradestats-0", worker_env(kafka.bootstrap_servers, topics, 6))
    workers.append(worker.start())
    await asyncio.to_thread(worker.wait_ready, 120)
    status, body = worker.get("/ready")
    assert (status, body["partitions"]) == (200, list(range(PARTITIONS))), body
    now = int(time.time() * 1000)
    source = trade_source(ticker_count=12, seed=5)
    trades = [Produced(*next(source), now - 8000 + i * 10) for i in range(600)]
    inputs = await produce(kafka.bootstrap_servers, topics.trades, trades)
    # Well below the consumer's five-minute metadata refresh.
    await expect_exact_windows(kafka.bootstrap_servers, topics, inputs, within=90)
    assert_never_crashed(worker)


async def test_input_resuming_after_lulls_stays_exact(
    kafka: Broker, tmp_path: Path, workers: list[Worker]
) -> None:
    """Bursts of trades between lulls longer than WINDOW_IDLE_CLOSE_MS, as in a quiet market:
    every lull closes the open windows, and every burst after it must come out exact, none
    of its trades turned late. (A first batch racing the idle check is for
    tests/unit/test_idle_close.py: its timing cannot be arranged from outside.)

    The lulls are longer than a window too: the oracle knows no idle close, and a burst
    starting sooner would fall into windows the lull closed (which the worker rightly keeps
    it out of)."""
    topics = Topics.unique("lulls")
    bootstrap = kafka.bootstrap_servers
    await create_topics(bootstrap, [topics.trades], PARTITIONS)
    worker = new_worker(tmp_path, "tradestats-0", worker_env(bootstrap, topics, PARTITIONS))
    workers.append(worker.start())
    await asyncio.to_thread(worker.wait_ready, 120)
    lull = max(int(worker.env["WINDOW_IDLE_CLOSE_MS"]), 5000) / 1000 + 1.5  # checks: 1/s
    bursts = 5
    # On time only: a trade stamped before a lull and arriving after it is late for the
    # worker alone.
    load = await SteadyLoad(bootstrap, topics.trades, rate=400, seed=31, late_fraction=0).start()
    try:
        for _ in range(bursts):
            await load.run_for(1.5)
            load.pause()
            await asyncio.sleep(lull)
            load.resume()
        inputs = await load.stop()
    finally:
        await load.close()
    await expect_exact_windows(bootstrap, topics, inputs, within=90)
    assert_never_crashed(worker)
    closes = worker.log_path.read_text(errors="replace").count("idle: closing its open windows")
    assert closes >= bursts, f"{closes} idle closes in {bursts} lulls: the lulls closed nothing"


async def test_restart_after_the_input_stopped_emits_every_window(
    kafka: Broker, tmp_path: Path, workers: list[Worker]
) -> None:
    """A backlog whose timestamps end just before the worker reads it; the worker is killed
    once it has processed everything but before its idle close, and restarted. The open
    windows it restores must be closed like any others (they used to stay open forever)."""
    topics = Topics.unique("rest")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    env = worker_env(kafka.bootstrap_servers, topics, PARTITIONS, window_idle_close_ms=8000)
    worker = new_worker(tmp_path, "tradestats-0", env)
    workers.append(worker.start())
    await asyncio.to_thread(worker.wait_ready, 120)
    now = int(time.time() * 1000)
    source = trade_source(ticker_count=30, seed=9)
    trades = [Produced(*next(source), now - 6000 + i * 3) for i in range(2000)]
    inputs = await produce(kafka.bootstrap_servers, topics.trades, trades)

    def processed_everything() -> bool:
        return worker.metrics()["tradestats_trades_processed_total"] >= len(inputs)

    await wait_until(processed_everything, within=60, what="the backlog processed")
    await asyncio.sleep(1.5)  # a checkpoint (COMMIT_INTERVAL_MS=500) made it durable
    worker.kill()
    restarted = worker.start()
    await asyncio.to_thread(restarted.wait_ready, 120)
    await expect_exact_windows(kafka.bootstrap_servers, topics, inputs, within=90)
    assert_never_crashed(restarted)


async def test_a_state_lost_with_its_changelog_is_rebuilt_from_the_input(
    kafka: Broker, tmp_path: Path, workers: list[Worker]
) -> None:
    """The changelog topic and the volume are gone (deleted by an operator), the group's
    committed offsets are not: the worker starts with no state, and its input's commits are
    past it. Carrying on from the commits would emit every window that spans the restart
    without the trades before it; the worker reads its input again from the start instead."""
    topics = Topics.unique("lost")
    bootstrap = kafka.bootstrap_servers
    await create_topics(bootstrap, [topics.trades], PARTITIONS)
    env = worker_env(bootstrap, topics, PARTITIONS, window_idle_close_ms=10_000)
    worker = new_worker(tmp_path, "tradestats-0", env)
    workers.append(worker.start())
    await asyncio.to_thread(worker.wait_ready, 120)
    now = int(time.time() * 1000)
    source = trade_source(ticker_count=30, seed=21)
    trades = [Produced(*next(source), now + i * 3) for i in range(4000)]  # 12 s of event time
    inputs = await produce(bootstrap, topics.trades, trades[:2000])

    def processed_first_half() -> bool:
        return worker.metrics()["tradestats_trades_processed_total"] >= len(inputs)

    await wait_until(processed_first_half, within=60, what="the first half processed")
    await asyncio.sleep(1.5)  # a checkpoint (COMMIT_INTERVAL_MS=500) committed it
    code, _ = worker.terminate()
    assert code == 0, worker.log_tail()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topics.changelog])
        deadline = time.monotonic() + 60
        while topics.changelog in await admin.list_topics():
            assert time.monotonic() < deadline, f"{topics.changelog} still listed after 60 s"
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
    shutil.rmtree(worker.data_dir)
    restarted = worker.start()
    await asyncio.to_thread(restarted.wait_ready, 120)
    inputs += await produce(bootstrap, topics.trades, trades[2000:])
    await expect_exact_windows(bootstrap, topics, inputs, within=90)
    assert_never_crashed(restarted)
    assert worker.metrics()["tradestats_trades_processed_total"] == len(trades)  # all again


async def test_endpoints_answer_through_rebalances(
    kafka: Broker, tmp_path: Path, workers: list[Worker]
) -> None:
    """/metrics, /health and /ready answer at every moment (never HTTP 500) while a second
    worker joins and leaves under load: /metrics used to fail asking the consumer for the
    high-water mark of partitions just revoked."""
    topics = Topics.unique("endpoints")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    # A static member that stops hands its partitions over once its session expires.
    env = worker_env(kafka.bootstrap_servers, topics, PARTITIONS, kafka_session_timeout_ms=6000)
    first = new_worker(tmp_path, "tradestats-0", env)
    second = new_worker(tmp_path, "tradestats-1", env)
    workers.extend([first.start(), second])
    await asyncio.to_thread(first.wait_ready, 120)
    statuses: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    stop = threading.Event()
    poller = threading.Thread(target=poll, args=(first, stop, statuses, failures))
    poller.start()
    load = await SteadyLoad(kafka.bootstrap_servers, topics.trades, rate=500, seed=4).start()
    try:
        for _ in range(2):
            second.start()
            await asyncio.to_thread(second.wait_ready, 120)
            await load.run_for(2)
            second.terminate()
            await wait_until(lambda: ready_partitions(first) == PARTITIONS, 120, "reassigned")
            await load.run_for(1)
        inputs = await load.stop()
    finally:
        stop.set()
        poller.join()
        await load.close()
    print("answers:", dict(statuses))
    assert not failures, failures[:5]
    assert statuses[("/metrics", 200)] > 20, statuses
    await expect_exact_windows(kafka.bootstrap_servers, topics, inputs, within=120)
    assert_never_crashed(first)


async def test_a_worker_started_before_kafka_waits_for_it(tmp_path: Path) -> None:
    """The broker is not there yet (a pod scheduled before Kafka): the worker keeps trying,
    answers /health, says on /ready what it waits for, and starts once Kafka is up."""
    port = free_port()
    topics = Topics.unique("early")
    worker = new_worker(tmp_path, "tradestats-0", worker_env(f"127.0.0.1:{port}", topics, 2))
    worker.start()
    broker = LocalKafka(tmp_path / "late-kafka", port=port)
    try:
        waited = time.monotonic()
        while time.monotonic() - waited < 15:
            assert worker.alive(), f"exited while Kafka was away:\n{worker.log_tail()}"
            with contextlib.suppress(OSError):
                ready = worker.get("/ready")
                health = worker.get("/health")
                assert ready[0] == 503, ready
                assert health[0] == 200, health
            await asyncio.sleep(0.5)
        assert "kafka" in str(worker.get("/ready")[1]).lower(), worker.get("/ready")
        await asyncio.to_thread(broker.start, timeout=180)
        await asyncio.to_thread(worker.wait_ready, 180)
        now = int(time.time() * 1000)
        trades = [Produced(b"MMM", json.dumps(trade(i)).encode(), now - 7000) for i in range(5)]
        inputs = await produce(broker.bootstrap_servers, topics.trades, trades)
        await expect_exact_windows(broker.bootstrap_servers, topics, inputs, within=90)
        assert_never_crashed(worker)
    finally:
        worker.stop_quietly()
        print(worker.log_tail(80))
        broker.stop()


def trade(i: int) -> dict[str, object]:
    return {"type": "ASK", "ticker": "MMM", "price": 100.0 + i, "size": i}


def poll(
    worker: Worker, stop: threading.Event, seen: Counter[tuple[str, int]], bad: list[str]
) -> None:
    """GET the three endpoints every 20 ms until ``stop``; a 500 (or no JSON) is a failure."""
    while not stop.is_set():
        for path in ("/metrics", "/health", "/ready"):
            try:
                with urllib.request.urlopen(worker.url + path, timeout=10) as response:
                    status, body = response.status, response.read()
            except urllib.error.HTTPError as error:
                status, body = error.code, error.read()
            except OSError as error:
                bad.append(f"{path}: {error!r}")
                continue
            seen[(path, status)] += 1
            if status >= 500 and not (path != "/metrics" and status == 503):
                bad.append(f"{path}: HTTP {status} {body[:300]!r}")
        stop.wait(0.02)


def ready_partitions(worker: Worker) -> int:
    status, body = worker.get("/ready")
    return len(body.get("partitions", [])) if status == 200 else 0


async def wait_until(condition: object, within: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"not {what} within {within} s"
        await asyncio.sleep(0.3)
