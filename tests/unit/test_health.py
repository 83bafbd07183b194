"""Liveness: a worker with input waiting and no progress is wedged; an idle one is not."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from tests.oracle import Record
from tests.unit.test_partition import trade_value
from tradestats.core.partition import PartitionState
from tradestats.service.metrics import Metrics
from tradestats.service.pipeline import Pipeline
from tradestats.settings import Settings


def pipeline_with(highwater: int | None, applied_offset: int, *, assigned: bool = True) -> Pipeline:
    def highwater_of(tp: TP) -> int | None:
        assert tp in consumer.assignment(), "Partition is not assigned"  # as aiokafka does
        return highwater

    held = {TP(Settings().trades_topic, 0)} if assigned else set()
    consumer = SimpleNamespace(highwater=highwater_of, assignment=lambda: held)
    app: Any = SimpleNamespace(consumer=consumer, consumer_generation_id=3, rebalancing=False)
    table: Any = SimpleNamespace(changelog_topic_name="changelog")
    pipeline = Pipeline(app, Settings(), table=table, metrics=Metrics())
    state = PartitionState(Settings().window_spec)
    records = [
        Record(0, i, 1000 + i, b"MMM", trade_value("MMM", 1.0, 1, "ASK"))
        for i in range(applied_offset + 1)
    ]
    state.process(records)
    pipeline._states[0] = state
    pipeline._recovered_generation = 3
    return pipeline


def test_input_waiting_without_progress_counts_as_stalled() -> None:
    pipeline = pipeline_with(highwater=100, applied_offset=9)
    assert pipeline.consumer_lag() == {0: 90}
    pipeline._last_progress = time.monotonic() - 120
    assert pipeline.stalled_for() >= 120


def test_caught_up_or_unknown_highwater_is_not_stalled() -> None:
    caught_up = pipeline_with(highwater=10, applied_offset=9)
    caught_up._last_progress = time.monotonic() - 120
    assert caught_up.consumer_lag() == {0: 0}
    assert caught_up.stalled_for() == 0.0
    unknown = pipeline_with(highwater=None, applied_offset=9)
    unknown._last_progress = time.monotonic() - 120
    assert unknown.stalled_for() == 0.0


def test_not_ready_is_not_stalled() -> None:
    pipeline = pipeline_with(highwater=100, applied_offset=9)
    pipeline._last_progress = time.monotonic() - 120
    pipeline.app.rebalancing = True  # restoring is /ready's business, not a reason to restart
    assert pipeline.stalled_for() == 0.0


def test_partitions_revoked_in_a_rebalance_have_no_lag_and_no_error() -> None:
    """The consumer gives partitions up before their states go: the lag of those is unknown
    (it used to raise, and /metrics and /health answered HTTP 500)."""
    revoked = pipeline_with(highwater=100, applied_offset=9, assigned=False)
    assert revoked.consumer_lag() == {}
    assert revoked.stalled_for() == 0.0
