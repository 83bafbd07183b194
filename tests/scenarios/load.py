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
import re
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
from tests.oracle import Expected, Record, expected_windows
from tradestats.core.codec import encode_windowed_key
from tradestats.core.trades import encode_trade
from tradestats.loadgen import TradeGenerator, tickers

__all__ = ["WORKER_DECISIONS", "KeyValue", "SteadyLoad", "expect_exact_windows", "trade_source"]

KeyValue = tuple[bytes | None, bytes | None]

_TICK_SECONDS = 0.05

#: Worker log lines that say what it decided or what went wrong: idle closes and windows held
#: open, dead letters, state loads, assignments, batches read or sent again, the broker out of
#: reach, errors and crashes. What an ``explain`` for :func:`expect_exact_windows` picks out.
WORKER_DECISIONS = re.compile(
    r"idle|stay open|dead-lettered|state loaded|again|assigned|ready:|reach|new producer"
    r"|earlier generation|stopping|ERROR|CRITICAL|Traceback|Crashed"
)


def trade_source(ticker_count: int = 12, seed: int = 0) -> Iterator[KeyValue]:
    """Realistic trades (the load generator's), as (key, value) records."""
    for trade in TradeGenerator(tickers(ticker_count), seed=seed):
        yield trade.ticker.encode(), encode_trade(trade)


class SteadyLoad:
    """Produce ``rate`` records per second until stopped; ``records`` is what was written.

    Each record is stamped with the wall clock when it is sent, except a fraction
    ``late_fraction`` stamped up to ``max_lag_ms`` earlier (out of order, some of them late).
    Like a real producer, it keeps stamping and sending while the broker is away: the client
    buffers and retries (acks=all, idempotent: no duplicates, order kept), and each record
    joins ``records`` with its partition and offset once acknowledged.
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
        self.sent = 0
        self.slowest_ack = 0.0  # seconds from a send to its acknowledgement (broker away...)
        self._rng = random.Random(seed)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._in_flight: asyncio.Queue[Any] = asyncio.Queue()
        self._producer: AIOKafkaProducer | None = None
        self._paused = False
        self._since = (0.0, 0)  # (monotonic time, records sent) the rate counts from

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
        self._tasks = [
            asyncio.create_task(self._produce(), name="steady-load"),
            asyncio.create_task(self._collect(), name="steady-load-acks"),
        ]
        return self

    async def wait_for(self, count: int, within: float = 60.0) -> None:
        """Until at least ``count`` records were written (the load keeps going)."""
        deadline = time.monotonic() + within
        while len(self.records) < count:
            self._raise_if_failed()
            assert time.monotonic() < deadline, f"only {len(self.records)} of {count} written"
            await asyncio.sleep(0.05)

    async def run_for(self, seconds: float) -> None:
        """Let the load run ``seconds`` longer (failing at once if it broke)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._raise_if_failed()
            await asyncio.sleep(0.1)

    def pause(self) -> None:
        """Stop stamping new records (a lull in the market) until :meth:`resume`."""
        self._paused = True

    def resume(self) -> None:
        """Produce at the rate again, from now on (no catching up on the lull)."""
        self._since = (time.monotonic(), self.sent)
        self._paused = False

    async def stop(self) -> list[Record]:
        """Stop producing, wait for every acknowledgement; returns every record written."""
        self._stopping.set()
        try:
            for task in self._tasks:
                await task
        finally:
            for task in self._tasks:
                task.cancel()
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None
        assert len(self.records) == self.sent
        return self.records

    async def close(self) -> None:
        """Stop without caring about errors (fixture teardown)."""
        with contextlib.suppress(Exception):
            await self.stop()

    def _raise_if_failed(self) -> None:
        for task in self._tasks:
            if task.done():
                task.result()  # raises the producer's error, if any
                raise AssertionError("the load stopped by itself")

    async def _produce(self) -> None:
        producer = self._producer
        assert producer is not None
        self._since = (time.monotonic(), 0)
        try:
            while not self._stopping.is_set():
                since, sent_before = self._since
                due = int(self.rate * (time.monotonic() - since)) - (self.sent - sent_before)
                for _ in range(0 if self._paused else due):
                    key, value = next(self.source)
                    timestamp = int(time.time() * 1000)
                    if self._rng.random() < self.late_fraction:
                        timestamp -= self._rng.randint(1, self.max_lag_ms)
                    future = await producer.send(self.topic, value, key=key, timestamp_ms=timestamp)
                    self.sent += 1
                    self._in_flight.put_nowait((key, value, timestamp, time.monotonic(), future))
                await asyncio.sleep(_TICK_SECONDS)
        finally:
            self._in_flight.put_nowait(None)

    async def _collect(self) -> None:
        while (item := await self._in_flight.get()) is not None:
            key, value, timestamp, sent_at, future = item
            metadata = await future
            self.slowest_ack = max(self.slowest_ack, time.monotonic() - sent_at)
            self.records.append(Record(metadata.partition, metadata.offset, timestamp, key, value))


async def expect_exact_windows(
    bootstrap: str,
    topics: Topics,
    inputs: list[Record],
    *,
    within: float = 120.0,
    explain: Callable[[], str] | None = None,
) -> Verdict:
    """Wait until every expected window is on the output topic, then check them all.

    At-least-once: a window may appear more than once, but only with the identical value.
    A mismatch says which trades the worker turned late, and what ``explain`` returns (the
    workers' side of the story).
    """
    expected = expected_windows(inputs, 5000, 1000)
    wanted = {encode_windowed_key(ticker, start) for ticker, start in expected.windows}
    assert wanted, "the scenario produced no windows"
    waiting = time.monotonic()
    await consume(bootstrap, topics.stats, done=_seen_all(wanted), within=within)
    print(f"waited {time.monotonic() - waiting:.1f} s for the {len(wanted)} expected windows")
    outputs: list[ConsumerRecord] = await consume_quiet(bootstrap, topics.stats)
    try:
        verdict = check_windows(inputs, outputs, exactly_once=False)
    except AssertionError as mismatch:
        story = f"\n{explain()}" if explain is not None else ""
        raise AssertionError(
            f"{mismatch}\n{await _late_disagreements(bootstrap, topics, expected)}{story}"
        ) from None
    assert verdict.windows == len(expected.windows)
    return verdict


async def _late_disagreements(bootstrap: str, topics: Topics, expected: Expected) -> str:
    """Which trades the worker dead-lettered as late while the oracle counts them in windows
    (windows closed too early), per partition: the usual reason for a window short of trades."""
    dead = await consume_quiet(bootstrap, topics.dlq)
    oracle_late = {(r.partition, r.offset) for r in expected.late}
    turned_late: dict[int, list[int]] = {}
    first_error: dict[int, str] = {}  # the worker's reason, with its stream time
    for record in dead:
        headers = {k: v.decode(errors="replace") for k, v in record.headers}
        if headers.get("tradestats.reason") != "late":
            continue
        origin = (
            int(headers["tradestats.source.partition"]),
            int(headers["tradestats.source.offset"]),
        )
        if origin not in oracle_late:
            turned_late.setdefault(origin[0], []).append(record.timestamp)
            first_error.setdefault(origin[0], headers.get("tradestats.error", "?"))
    if not turned_late:
        return "no trade was dead-lettered as late that the oracle counts in a window"
    return "dead-lettered as late, but in an open window per the oracle: " + "; ".join(
        f"partition {partition}: {len(stamps)} trades stamped {min(stamps)}..{max(stamps)} "
        f"(first: {first_error[partition]})"
        for partition, stamps in sorted(turned_late.items())
    )


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
