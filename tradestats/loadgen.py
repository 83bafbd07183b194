"""Load generator: realistic trades like the original demo's generator, at a rate or flat out.

The original: ten tickers starting at 5000, each trade's price the ticker's base plus a small
Gaussian step, the base walking by a random integer every ten trades of that ticker, sizes
uniformly 0-99. Records are keyed by the ticker's raw bytes and stamped with the wall clock.

``tradestats loadgen`` stops on SIGTERM and SIGINT alike, with every trade sent acknowledged and
its summary printed: in a container it may be PID 1, for which the kernel ignores signals that
have no handler, so the handlers are installed first thing (``stop_on_signals``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import random
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tradestats.core.trades import Trade, encode_trade
from tradestats.settings import Settings

__all__ = [
    "ORIGINAL_TICKERS",
    "LoadReport",
    "Producer",
    "RateLog",
    "TradeGenerator",
    "produce",
    "stop_on_signals",
    "tickers",
]

log = logging.getLogger(__name__)

ORIGINAL_TICKERS = ("MMM", "ABT", "ABBV", "ACN", "ATVI", "AYI", "ADBE", "AAP", "AES", "AET")
BASE_PRICE = 5000.0


def tickers(count: int) -> list[str]:
    """The original ten tickers, then synthetic ones (``T0010``...) up to ``count``."""
    names = list(ORIGINAL_TICKERS[:count])
    names += [f"T{i:04d}" for i in range(len(names), count)]
    return names


@dataclass
class TradeGenerator:
    """An endless, seedable stream of trades over the given tickers."""

    names: Sequence[str]
    types: Sequence[str] = ("ASK", "BID")
    seed: int | None = None
    _rng: random.Random = field(init=False)
    _base: dict[str, float] = field(init=False)
    _passes: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._base = dict.fromkeys(self.names, BASE_PRICE)
        self._passes = dict.fromkeys(self.names, 0)

    def __iter__(self) -> Iterator[Trade]:
        rng = self._rng
        while True:
            for name in self.names:
                passes = self._passes[name] = self._passes[name] + 1
                if passes % 10 == 0:
                    self._base[name] += rng.randint(-5, 4)
                price = round(self._base[name] + rng.gauss(1.0, 0.25), 2)
                kind: Any = rng.choice(self.types)  # validated by Trade's consumers, not here
                yield Trade(kind, name, max(price, 0.01), rng.randint(0, 99))


class Producer(Protocol):
    """What the generator needs of an aiokafka producer."""

    async def send(self, topic: str, value: bytes, *, key: bytes) -> Awaitable[Any]: ...


@dataclass
class LoadReport:
    sent: int = 0
    bytes: int = 0
    seconds: float = 0.0
    per_ticker: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


async def produce(
    producer: Producer,
    topic: str,
    trades: Iterator[Trade],
    *,
    rate: float | None,
    count: int | None,
    duration: float | None,
    on_progress: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> LoadReport:
    """Send trades until ``count`` or ``duration`` is reached (whichever first; none = forever)
    or ``stop`` is set; returns once everything sent is acknowledged.

    ``rate`` is trades per second (None: as fast as the producer accepts). ``producer`` is a
    started aiokafka producer; ``on_progress(n)`` is called with the number sent since the last
    call, a few times per second.
    """
    report = LoadReport()
    started = time.monotonic()
    deadline = started + duration if duration is not None else None
    pending: list[Awaitable[Any]] = []
    last_report = started
    reported = 0
    for trade in trades:
        if count is not None and report.sent >= count:
            break
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        if stop is not None and stop.is_set():
            break
        if rate:
            ahead = report.sent / rate - (now - started)
            if ahead > 0:
                await _sleep_unless(stop, ahead)
                if stop is not None and stop.is_set():
                    break
        value = encode_trade(trade)
        pending.append(await producer.send(topic, value, key=trade.ticker.encode()))
        report.sent += 1
        report.bytes += len(value)
        report.per_ticker[trade.ticker] = report.per_ticker.get(trade.ticker, 0) + 1
        if len(pending) >= 10_000:
            await asyncio.gather(*pending)
            pending.clear()
        if on_progress is not None and now - last_report >= 0.2:
            on_progress(report.sent - reported)
            reported, last_report = report.sent, now
    await asyncio.gather(*pending)
    if on_progress is not None:
        on_progress(report.sent - reported)
    report.seconds = time.monotonic() - started
    return report


async def _sleep_unless(stop: asyncio.Event | None, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``stop`` is set meanwhile (a slow rate stops at once)."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


@dataclass
class RateLog:
    """``on_progress`` without a terminal: a log line with the rate every ``interval`` seconds."""

    interval: float = 10.0
    total: int = 0
    _since: tuple[float, int] = field(default_factory=lambda: (time.monotonic(), 0))

    def __call__(self, sent: int) -> None:
        self.total += sent
        now = time.monotonic()
        started, before = self._since
        if now - started >= self.interval:
            rate = (self.total - before) / (now - started)
            elapsed = now - started
            log.info(
                "sent %d trades, %.0f trades/s over the last %.0f s", self.total, rate, elapsed
            )
            self._since = (now, self.total)


def stop_on_signals() -> threading.Event:
    """Handle SIGTERM and SIGINT from now on: the event returned is set by either."""
    requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: requested.set())
    return requested


def run_loadgen(
    settings: Settings,
    *,
    rate: float | None,
    count: int | None,
    duration: float | None,
    ticker_count: int,
    types: Sequence[str],
    seed: int | None,
    progress: bool,
    stop_requested: threading.Event,
    log_interval: float = 10.0,
) -> LoadReport:
    """The ``tradestats loadgen`` command: produce until done or ``stop_requested`` (set by
    ``stop_on_signals``: SIGTERM, Ctrl-C).

    With ``progress`` a progress bar; without (no terminal, a container) a log line with the
    rate every ``log_interval`` seconds, in the workers' log format (``LOG_FORMAT``).
    """
    from aiokafka import AIOKafkaProducer
    from tqdm import tqdm

    from tradestats.service.kafka import producer_config
    from tradestats.service.logs import logging_config
    from tradestats.service.topics import record_batch_limits

    logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))

    async def main() -> LoadReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if stop_requested.is_set():  # a signal before the loop's handlers were in place
            stop.set()
        config = producer_config(settings, client_id=f"{settings.app_id}-loadgen", linger_ms=20)
        # Batches the topic takes: an operator may have created it with a lower record limit.
        limits = await record_batch_limits(settings, [settings.trades_topic])
        config["max_batch_size"] = min(
            config["max_batch_size"], limits.get(settings.trades_topic, config["max_batch_size"])
        )
        producer = AIOKafkaProducer(**config)
        await producer.start()
        bar = tqdm(total=count, unit=" trades", disable=not progress, smoothing=0.1)
        try:
            return await produce(
                producer,
                settings.trades_topic,
                iter(TradeGenerator(tickers(ticker_count), types, seed)),
                rate=rate,
                count=count,
                duration=duration,
                on_progress=bar.update if progress else RateLog(log_interval),
                stop=stop,
            )
        finally:
            bar.close()
            await producer.stop()

    return asyncio.run(main())
