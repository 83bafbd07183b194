"""Integration-test harness: topics, producing and consuming, and workers as real processes.

Workers run as ``python -m tradestats worker`` subprocesses, exactly as deployed, so tests
can SIGTERM and SIGKILL them and restart them on the same data directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2
from aiokafka.structs import ConsumerRecord

from tests.oracle import (
    Expected,
    Record,
    assert_window_values_match,
    expected_windows,
    window_value,
)
from tradestats.core.codec import decode_windowed_key
from tradestats.service.app import STATE_TABLE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Topics:
    """Unique names per test, so tests never see each other's data."""

    app_id: str
    trades: str
    stats: str
    dlq: str

    @classmethod
    def unique(cls, label: str = "t") -> Topics:
        tag = f"{label}-{uuid.uuid4().hex[:8]}"
        return cls(f"ts-{tag}", f"trades-{tag}", f"stats-{tag}", f"dlq-{tag}")

    @property
    def changelog(self) -> str:
        """faust's name for the state table's changelog."""
        return f"{self.app_id}-{STATE_TABLE}-changelog"


async def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    config: Mapping[str, str] | None = None,
) -> None:
    """Create topics the way an operator would, before any worker runs (``config`` for all)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, partitions, 1, topic_configs=dict(config or {})) for n in names]
        )
    finally:
        await admin.close()


@dataclass(frozen=True)
class Produced:
    """A record to produce; ``partition`` None lets the default partitioner place it."""

    key: bytes | None
    value: bytes | None
    timestamp: int
    partition: int | None = None


async def produce(bootstrap: str, topic: str, records: Sequence[Produced]) -> list[Record]:
    """Produce in order, acks=all; returns the records as the oracle sees them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, r.value, key=r.key, partition=r.partition, timestamp_ms=r.timestamp
            )
            for r in records
        ]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [
        Record(m.partition, m.offset, r.timestamp, r.key, r.value)
        for r, m in zip(records, metadata, strict=True)
    ]


async def consume(
    bootstrap: str,
    topic: str,
    *,
    done: Callable[[list[ConsumerRecord]], bool],
    within: float,
) -> list[ConsumerRecord]:
    """Read the topic from the start until ``done(records)``, for at most ``within`` seconds."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + within
    try:
        while not done(records) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def consume_quiet(bootstrap: str, topic: str, *, quiet: float = 3.0) -> list[ConsumerRecord]:
    """Everything in the topic now (stops after ``quiet`` seconds without a new record)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=int(quiet * 1000))
            if not batches:
                return records
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()


# --- workers -------------------------------------------------------------------------------


@dataclass
class Worker:
    """One ``tradestats worker`` process with its own data directory and web port."""

    name: str
    env: dict[str, str]
    data_dir: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> Worker:
        env = {
            **os.environ,
            **self.env,
            "DATA_DIR": str(self.data_dir),
            "WEB_PORT": str(self.port),
            "WEB_HOST": "127.0.0.1",
            "POD_NAME": self.name,
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        log.write(f"\n===== start {self.name} at {time.ctime()}\n".encode())
        log.flush()
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tradestats", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        """(status, parsed JSON or text) of a GET on the worker's web server."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from process start until /ready answered 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                if self.get("/ready", timeout=2)[0] == 200:
                    return time.monotonic() - self.started_at
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready after {timeout} s:\n{self.log_tail()}")

    def terminate(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds to exit)."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop_quietly(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    def log_text(self) -> str:
        """Everything the worker logged so far (every start of it), or nothing yet."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def metrics(self) -> dict[str, float]:
        """The Prometheus exposition as {series: value}."""
        status, text = self.get("/metrics")
        assert status == 200, text
        values = {}
        for line in str(text).splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                values[series] = float(value)
        return values


def worker_env(
    bootstrap: str, topics: Topics, partitions: int, **overrides: object
) -> dict[str, str]:
    """Settings for test workers: fast commits and idle close, so tests finish quickly."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "APP_ID": topics.app_id,
        "TRADES_TOPIC": topics.trades,
        "STATS_TOPIC": topics.stats,
        "DLQ_TOPIC": topics.dlq,
        "TOPIC_PARTITIONS": str(partitions),
        "COMMIT_INTERVAL_MS": "500",
        "WINDOW_IDLE_CLOSE_MS": "2000",
        "LOG_LEVEL": "info",
    }
    env.update({key.upper(): str(value) for key, value in overrides.items()})
    return env


# --- checking results -----------------------------------------------------------------------


@dataclass
class Verdict:
    expected: Expected
    windows: int
    duplicates: int


def _lacking_trades(expected: Expected, window: tuple[str, int], value: dict[str, Any]) -> str:
    """Which trades a window short of some lacks: the one run of consecutive trades (by
    partition and offset) whose removal gives its count and volume, if there is one. A run
    points at the batch, checkpoint or rebalance that lost them."""
    trades, members = expected.windows[window], expected.members[window]
    short = len(trades) - value["countTrades"]
    if short <= 0:
        return f"window {window}: not short of trades"
    volume = sum(size for _, size, _ in trades)
    runs = [
        members[first : first + short]
        for first in range(len(trades) - short + 1)
        if volume - sum(size for _, size, _ in trades[first : first + short]) == value["volume"]
    ]
    if len(runs) != 1:
        return f"window {window} lacks {short} trades, not one run of them ({len(runs)} fit)"
    (partition, low), (_, high) = runs[0][0], runs[0][-1]
    return (
        f"window {window} lacks the {short} trades at partition {partition} offsets {low}..{high}"
    )


def check_windows(
    inputs: Sequence[Record],
    outputs: Sequence[ConsumerRecord],
    *,
    size_ms: int = 5000,
    advance_ms: int = 1000,
    grace_ms: int = 0,
    exactly_once: bool,
    output_partitions: int | None = None,
) -> Verdict:
    """Every expected window present with the right value; duplicates identical (or none).

    With ``output_partitions``, also that each result is in its ticker's partition as Kafka's
    default partitioner places the ticker key (aiokafka's murmur2, not the worker's hash).
    """
    expected = expected_windows(list(inputs), size_ms, advance_ms, grace_ms)
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    counts: Counter[tuple[str, int]] = Counter()
    for record in outputs:
        ticker, start = decode_windowed_key(record.key)
        value = json.loads(record.value)
        assert (value["ticker"], value["windowStart"]) == (ticker, start), (record.key, value)
        assert record.timestamp == start + size_ms - 1
        if output_partitions is not None:
            placed = (murmur2(ticker.encode()) & 0x7FFFFFFF) % output_partitions
            assert record.partition == placed, (ticker, start, record.partition, placed)
        if (ticker, start) in seen:
            assert seen[(ticker, start)] == value, (
                f"window {(ticker, start)} emitted with two values"
            )
        seen[(ticker, start)] = value
        counts[(ticker, start)] += 1
    missing = expected.windows.keys() - seen.keys()
    extra = seen.keys() - expected.windows.keys()
    assert not missing, f"{len(missing)} windows missing, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} unexpected windows, e.g. {sorted(extra)[:5]}"
    for (ticker, start), trades in expected.windows.items():
        try:
            assert_window_values_match(
                seen[(ticker, start)], window_value(ticker, start, size_ms, trades)
            )
        except AssertionError as mismatch:
            lacking = _lacking_trades(expected, (ticker, start), seen[(ticker, start)])
            raise AssertionError(f"{mismatch}\n{lacking}") from None
    duplicates = sum(n - 1 for n in counts.values())
    if exactly_once:
        assert duplicates == 0, f"{duplicates} windows emitted more than once"
    return Verdict(expected, len(seen), duplicates)
