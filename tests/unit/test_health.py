"""Liveness: a worker with input waiting and no progress is wedged; an idle one is not."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from tests.oracle import Record
from tests.unit.test_partition import trade_value
from tradestats.core.partition import PartitionState
from tradestats.service.metrics import Metrics
from tradestats.service.pipeline import Pipeline
from tradestats.settings import Settings


def pipeline_with(highwater: int | None, applied_offset: int) -> Pipeline:
    consumer = SimpleNamespace(highwater=lambda tp: highwater)
    app: Any = SimpleNamespace(consumer=consumer, consumer_generation_id=3, rebalancing=False)
    pipeline = Pipeline(app, Settings(), table=None, metrics=Metrics(), output_topics=[])  # type: ignore[arg-type]
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
