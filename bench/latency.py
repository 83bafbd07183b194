"""Emit latency under a fixed input rate below saturation (a separate phase per contender).

The contender starts on a fresh, empty topic. One closing-ticker trade per partition is sent
first and the phase waits until the contender has consumed one, so start-up is over. Then
trades are produced at ``rate`` per second for ``seconds``, each stamped with the wall clock
when it is sent, while the harness tails the output topic and notes when each record arrives.

Emit latency of a window = the time the harness first received that window's *complete*
result (a record whose ``countTrades`` equals the number of trades sent for the window) minus
the window's end (start + 5 s). For a contender that emits one final result that is its
arrival; for one that emits updates it is the arrival of the update that included the last
trade, counted as 0 when it arrived before the window ended (a consumer cannot know an update
is final before the end). Measured: windows of regular tickers that start at least
``warmup`` after the production start and end at least one second before it stops (so
later trades closed them). A window that never arrived complete is counted as
``incomplete``, not in the percentiles. Both clocks are this machine's wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from bench.contenders.base import Contender
from bench.dataset import WINDOW_ADVANCE_MS, WINDOW_SIZE_MS, closing_tickers
from bench.harness import ContenderFailed, Context
from bench.process import ContenderProcess
from bench.results import ContenderResult, Latency
from tradestats.core.codec import decode_windowed_key
from tradestats.core.trades import Trade, encode_trade
from tradestats.loadgen import TradeGenerator, tickers

__all__ = ["run_latency"]

_READY_TIMEOUT = 180.0


def _windows_of(timestamp: int) -> range:
    first = timestamp - timestamp % WINDOW_ADVANCE_MS - WINDOW_SIZE_MS + WINDOW_ADVANCE_MS
    return range(first, timestamp + 1, WINDOW_ADVANCE_MS)


def _percentile(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class _Tail:
    """Tails the output topic: per window, when each ``countTrades`` value first arrived."""

    def __init__(self) -> None:
        self.arrivals: dict[tuple[str, int], dict[int, float]] = defaultdict(dict)
        self.records = 0

    def handle(self, record: ConsumerRecord, received: float) -> None:
        if record.key is None or record.value is None:
            return
        window = decode_windowed_key(record.key)
        count = int(json.loads(record.value)["countTrades"])
        self.arrivals[window].setdefault(count, received)
        self.records += 1

    async def run(self, bootstrap: str, topic: str, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                received = time.time()
                for records in batches.values():
                    for record in records:
                        self.handle(record, received)
        finally:
            await consumer.stop()


async def run_latency(ctx: Context, contender: Contender, result: ContenderResult) -> None:
    """Measure ``contender``'s emit latency; sets ``result.latency`` or adds an error."""
    settings = ctx.settings
    label = f"[{contender.key} {contender.name}]"
    run = ctx.latency_spec(contender)
    await ctx.ops.create_topics([run.input_topic, run.output_topic], settings.partitions)
    producer = AIOKafkaProducer(bootstrap_servers=ctx.bootstrap, acks=1, linger_ms=0)
    await producer.start()
    proc = ctx.process(contender, run).start()
    stop_tail = asyncio.Event()
    tail = _Tail()
    tail_task: asyncio.Task[None] | None = None
    try:
        now_ms = int(time.time() * 1000)
        for name in closing_tickers(settings.partitions):
            await producer.send_and_wait(
                run.input_topic,
                encode_trade(Trade("ASK", name, 1.0, 1)),
                key=name.encode(),
                timestamp_ms=now_ms,
            )
        deadline = time.time() + _READY_TIMEOUT
        while contender.first_record_ms(proc, run) is None:
            if not proc.alive() or time.time() > deadline:
                raise ContenderFailed("not consuming in the latency phase:\n" + proc.log_tail())
            ctx.progress.status(f"{label} latency phase: waiting for the contender to start")
            await asyncio.sleep(0.2)
        tail_task = asyncio.create_task(tail.run(ctx.bootstrap, run.output_topic, stop_tail))
        sent = await _produce_at_rate(ctx, producer, run.input_topic, label)
        await _collect_last_results(ctx, proc, tail, sent, label)
    except ContenderFailed as exc:
        result.errors.append(f"latency: {exc}")
        ctx.progress.say(f"{label} latency FAILED: {exc}")
        return
    finally:
        stop_tail.set()
        if tail_task is not None:
            with contextlib.suppress(Exception):
                await tail_task
        proc.stop()
        await producer.stop()
    result.latency = _summarise(ctx, tail, sent)
    lat = result.latency
    ctx.progress.say(
        f"{label} emit latency at {lat.rate:.0f} trades/s: p50 {lat.p50_ms or 0:.0f} ms, "
        f"p99 {lat.p99_ms or 0:.0f} ms over {lat.windows} windows ({lat.incomplete} incomplete)"
    )


class _Sent:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, int], int] = defaultdict(int)
        self.started_ms = 0
        self.stopped_ms = 0
        self.trades = 0


async def _produce_at_rate(
    ctx: Context,
    producer: AIOKafkaProducer,
    topic: str,
    label: str,
) -> _Sent:
    settings = ctx.settings
    sent = _Sent()
    trades = iter(TradeGenerator(tickers(settings.latency_tickers), seed=settings.seed + 1))
    started = time.monotonic()
    sent.started_ms = int(time.time() * 1000)
    pending = []
    while (elapsed := time.monotonic() - started) < settings.latency_seconds:
        ahead = sent.trades / settings.latency_rate - elapsed
        if ahead > 0:
            await asyncio.sleep(ahead)
        trade = next(trades)
        timestamp = int(time.time() * 1000)
        pending.append(
            await producer.send(
                topic, encode_trade(trade), key=trade.ticker.encode(), timestamp_ms=timestamp
            )
        )
        for start in _windows_of(timestamp):
            sent.counts[(trade.ticker, start)] += 1
        sent.trades += 1
        if sent.trades % 200 == 0:
            ctx.progress.status(
                f"{label} latency phase: {sent.trades:,} trades sent at "
                f"{settings.latency_rate:.0f}/s ({elapsed:.0f}/{settings.latency_seconds:.0f} s)"
            )
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    sent.stopped_ms = int(time.time() * 1000)
    return sent


async def _collect_last_results(
    ctx: Context, proc: ContenderProcess, tail: _Tail, sent: _Sent, label: str
) -> None:
    """Until every measured window's complete result has arrived, or none arrived for
    ``stall_seconds``: a contender that fell behind (a loaded machine) still delivers them,
    late, and a fixed wait would count them as never arriving."""
    measured = _measured(ctx, sent)
    deadline = time.monotonic() + ctx.settings.timeout
    seen, seen_at = -1, time.monotonic()
    while True:
        if not proc.alive():
            raise ContenderFailed("exited during the latency phase:\n" + proc.log_tail())
        missing = sum(tail.arrivals.get(window, {}).get(n) is None for window, n in measured)
        if not missing:
            return
        now = time.monotonic()
        if tail.records != seen:
            seen, seen_at = tail.records, now
        if now - seen_at > ctx.settings.stall_seconds or now > deadline:
            return  # the summary counts what is still missing as incomplete
        ctx.progress.status(
            f"{label} latency phase: waiting for the results of {missing} of "
            f"{len(measured)} windows"
        )
        await asyncio.sleep(0.2)


def _measured(ctx: Context, sent: _Sent) -> list[tuple[tuple[str, int], int]]:
    """(window, trades sent for it) of every window the latency is measured on."""
    earliest = sent.started_ms + int(ctx.settings.latency_warmup * 1000)
    latest_end = sent.stopped_ms - 1000
    return [
        ((ticker, start), count)
        for (ticker, start), count in sent.counts.items()
        if start >= earliest and start + WINDOW_SIZE_MS <= latest_end
    ]


def _summarise(ctx: Context, tail: _Tail, sent: _Sent) -> Latency:
    settings = ctx.settings
    latencies: list[float] = []
    incomplete = 0
    for (ticker, start), count in _measured(ctx, sent):
        end = start + WINDOW_SIZE_MS
        arrived = tail.arrivals.get((ticker, start), {}).get(count)
        if arrived is None:
            incomplete += 1
        else:
            # An update can carry the complete value before the window ends; the consumer
            # cannot know it is final until then, so it counts from the window end.
            latencies.append(max(0.0, arrived * 1000 - end))
    latencies.sort()
    return Latency(
        rate=settings.latency_rate,
        seconds=settings.latency_seconds,
        windows=len(latencies),
        incomplete=incomplete,
        p50_ms=_percentile(latencies, 50) if latencies else None,
        p99_ms=_percentile(latencies, 99) if latencies else None,
        max_ms=latencies[-1] if latencies else None,
    )
