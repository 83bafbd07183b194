"""Continuous load for the scenarios, and the closing check of every window against the oracle.

:class:`SteadyLoad` produces trades at a steady rate, stamped with the wall clock as it sends
them (explicit timestamps, a few of them seconds late), for as long as the scenario runs; it
keeps every record as the oracle sees it (partition, offset, timestamp, key, value), so the
expected windows can be computed independently at the end. :func:`expect_exact_windows` then
waits for all of them on the output topic and checks them: all present, exact, duplicates only
identical.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from tests.integration.harness import (
    Topics,
    Verdict,
    check_windows,
    consume,
    consume_quiet,
)
from tests.oracle import Record, expected_windows
from tradestats.core.codec import encode_windowed_key
from tradestats.core.trades import encode_trade
from tradestats.loadgen import TradeGenerator, tickers

__all__ = ["KeyValue", "SteadyLoad", "expect_exact_windows", "trade_source"]

KeyValue = tuple[bytes | None, bytes | None]

_TICK_SECONDS = 0.05


def trade_source(ticker_count: int = 12, seed: int = 0) -> Iterator[KeyValue]:
    """Realistic trades (the load generator's), as (key, value) records."""
    for trade in TradeGenerator(tickers(ticker_count), seed=seed):
        yield trade.ticker.encode(), encode_trade(trade)


class SteadyLoad:
    """Produce ``rate`` records per second until stopped; ``records`` is what was written.

    Each record is stamped with the wall clock when it is sent, except a fraction
    ``late_fraction`` stamped up to ``max_lag_ms`` earlier (out of order, some of them late).
    Sends are acknowledged (acks=all, idempotent) before the next tick: when the broker is
    away, the load pauses instead of losing track of what was written.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        rate: float,
        source: Iterator[KeyValue] | None = None,
        seed: int = 0,
        late_fraction: float = 0.03,
        max_lag_ms: int = 6000,
        client: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.rate = rate
        self.source = source if source is not None else trade_source(seed=seed)
        self.late_fraction = late_fraction
        self.max_lag_ms = max_lag_ms
        self.client = client or {}
        self.records: list[Record] = []
        self._rng = random.Random(seed)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self.paused_for = 0.0  # longest wait for an acknowledgement (e.g. broker away)

    @property
    def sent(self) -> int:
        return len(self.records)

    async def start(self) -> SteadyLoad:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=120_000,
            **self.client,
        )
        await self._producer.start()
        self._task = asyncio.create_task(self._run(), name="steady-load")
        return self

    async def wait_for(self, count: int, within: float = 60.0) -> None:
        """Until at least ``count`` records were written (the load keeps going)."""
        deadline = time.monotonic() + within
        while self.sent < count:
            self._raise_if_failed()
            assert time.monotonic() < deadline, f"only {self.sent} of {count} records sent"
            await asyncio.sleep(0.05)

    async def run_for(self, seconds: float) -> None:
        """Let the load run ``seconds`` longer (failing at once if it broke)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._raise_if_failed()
            await asyncio.sleep(0.1)

    async def stop(self) -> list[Record]:
        """Stop producing; returns every record written."""
        self._stopping.set()
        try:
            if self._task is not None:
                await self._task
        finally:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None
        return self.records

    async def close(self) -> None:
        """Stop without caring about errors (fixture teardown)."""
        with contextlib.suppress(Exception):
            await self.stop()

    def _raise_if_failed(self) -> None:
        if self._task is not None and self._task.done():
            self._task.result()  # raises the producer's error, if any
            raise AssertionError("the load stopped by itself")

    async def _run(self) -> None:
        producer = self._producer
        assert producer is not None
        started = time.monotonic()
        while not self._stopping.is_set():
            due = int(self.rate * (time.monotonic() - started)) - self.sent
            if due > 0:
                await self._send(producer, due)
            await asyncio.sleep(_TICK_SECONDS)

    async def _send(self, producer: AIOKafkaProducer, count: int) -> None:
        batch = []
        for _ in range(count):
            key, value = next(self.source)
            timestamp = int(time.time() * 1000)
            if self._rng.random() < self.late_fraction:
                timestamp -= self._rng.randint(1, self.max_lag_ms)
            future = await producer.send(self.topic, value, key=key, timestamp_ms=timestamp)
            batch.append((key, value, timestamp, future))
        waited = time.monotonic()
        metadata = await asyncio.gather(*(future for *_, future in batch))
        self.paused_for = max(self.paused_for, time.monotonic() - waited)
        self.records.extend(
            Record(m.partition, m.offset, timestamp, key, value)
            for (key, value, timestamp, _), m in zip(batch, metadata, strict=True)
        )


async def expect_exact_windows(
    bootstrap: str,
    topics: Topics,
    inputs: list[Record],
    *,
    within: float = 120.0,
) -> Verdict:
    """Wait until every expected window is on the output topic, then check them all.

    At-least-once: a window may appear more than once, but only with the identical value.
    """
    expected = expected_windows(inputs, 5000, 1000)
    wanted = {encode_windowed_key(ticker, start) for ticker, start in expected.windows}
    assert wanted, "the scenario produced no windows"
    await consume(bootstrap, topics.stats, done=_seen_all(wanted), within=within)
    outputs: list[ConsumerRecord] = await consume_quiet(bootstrap, topics.stats)
    verdict = check_windows(inputs, outputs, exactly_once=False)
    assert verdict.windows == len(expected.windows)
    return verdict


def _seen_all(wanted: set[bytes]) -> Callable[[list[ConsumerRecord]], bool]:
    missing = set(wanted)
    scanned = 0

    def done(records: list[ConsumerRecord]) -> bool:
        nonlocal scanned
        for record in records[scanned:]:
            missing.discard(record.key)
        scanned = len(records)
        return not missing

    return done
