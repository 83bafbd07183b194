"""Idle close: a quiet partition's windows wait while the cluster moves under producers."""

from __future__ import annotations

from typing import Any

import pytest
from faust.types import TP

from tests.unit.pipelines import bare_pipeline
from tradestats.service.pipeline import Pipeline
from tradestats.service.transport import BatchingConsumer
from tradestats.settings import Settings

pytestmark = pytest.mark.asyncio

SETTINGS = Settings(window_idle_close_ms=2000)
TRADES = TP(SETTINGS.trades_topic, 0)


class FakeConsumer(BatchingConsumer):
    """A cluster view the test sets, and every end-offset lookup asked for."""

    def __init__(self) -> None:  # no app, no broker
        self.view: Any = ("brokers 1 2 3", "leader 1")
        self.refreshes = 0
        self.lookups: list[tuple[TP, ...]] = []

    async def cluster_view(self, partitions: Any, *, refresh: bool) -> Any:
        self.refreshes += refresh
        return self.view

    async def highwaters(self, *partitions: TP) -> Any:
        self.lookups.append(partitions)
        return {tp: 10**9 for tp in partitions}  # unread input: nothing is closed


@pytest.fixture
def pipeline() -> Pipeline:
    pipeline = bare_pipeline(FakeConsumer(), SETTINGS)
    pipeline._last_trade[0] = pipeline._steady_since = 100.0
    return pipeline


async def test_a_quiet_partition_is_looked_up_after_the_idle_time(pipeline: Pipeline) -> None:
    consumer = pipeline.app.consumer
    await pipeline._close_idle_partitions(101.0)
    assert (consumer.lookups, consumer.refreshes) == ([], 0)  # 1 s: not quiet, no request
    await pipeline._close_idle_partitions(102.5)
    assert consumer.lookups == [(TRADES,)]
    assert consumer.refreshes == 1  # the decision is taken on fresh metadata


async def test_a_cluster_change_restarts_the_idle_count(pipeline: Pipeline) -> None:
    """A broker bounce: producers wait for the new leader or the smaller in-sync set."""
    consumer = pipeline.app.consumer
    await pipeline._close_idle_partitions(101.0)  # the view as it was
    consumer.view = ("brokers 2 3", "leader 2")
    await pipeline._close_idle_partitions(102.5)
    assert pipeline._steady_since == 102.5
    assert consumer.lookups == [(TRADES,)]  # asked, but no close decided: not steady yet
    await pipeline._close_idle_partitions(103.6)
    assert pipeline._steady_since == 102.5
    consumer.view = ("brokers 1 2 3", "leader 2")  # the node is back
    await pipeline._close_idle_partitions(104.7)
    assert pipeline._steady_since == 104.7


async def test_trades_that_come_while_the_broker_is_asked_keep_the_windows_open(
    pipeline: Pipeline,
) -> None:
    """Input resuming after a lull: the first batch is folded in while the idle check waits
    for the broker. Closing then would turn the rest of that second's trades late."""
    state = pipeline._states[0]
    closed: list[float] = []
    state.close_idle = lambda: closed.append(pipeline._last_trade.get(0, -1.0)) or False

    async def everything_read(*partitions: TP) -> Any:
        return {TRADES: state.applied_offset + 1}

    async def a_batch_meanwhile(*partitions: TP) -> Any:
        state.applied_offset += 4  # what handle() does with a batch of trades
        pipeline._last_trade[0] = 102.6
        return {TRADES: state.applied_offset + 1}

    pipeline.app.consumer.highwaters = a_batch_meanwhile
    await pipeline._close_idle_partitions(102.5)
    assert closed == [], "windows closed while trades were coming in"
    assert pipeline._last_trade[0] == 102.6

    pipeline.app.consumer.highwaters = everything_read  # quiet for the idle time again
    await pipeline._close_idle_partitions(104.7)
    assert closed == [-1.0], "a partition quiet for the idle time, all read, was not closed"


async def test_windows_held_open_say_why_once_per_quiet_spell(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """Windows that never close are a mystery unless the worker says what it waits for."""
    caplog.set_level("INFO", logger="tradestats.service.pipeline")
    applied = pipeline._states[0].applied_offset
    for now in (102.5, 103.6, 104.7, 133.0):
        await pipeline._close_idle_partitions(now)
    held = [r.getMessage() for r in caplog.records if "stay open" in r.getMessage()]
    reason = (
        "its windows stay open: input not read yet "
        f"(end offset {10**9}, last offset processed {applied})"
    )
    assert held == [f"partition 0 quiet for 2 s, {reason}", f"partition 0 quiet for 33 s, {reason}"]
    pipeline._last_trade[0] = 140.0  # trades came: a new quiet spell, said again at once
    await pipeline._close_idle_partitions(142.5)
    assert len([r for r in caplog.records if "stay open" in r.getMessage()]) == 3
