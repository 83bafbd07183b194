"""A batch that would skip records after the last one processed is refused and read again."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from tests.unit.pipelines import bare_pipeline
from tradestats.service.pipeline import Pipeline
from tradestats.service.transport import BatchingConsumer, RecordBatch
from tradestats.settings import Settings

pytestmark = pytest.mark.asyncio

SETTINGS = Settings()
TRADES = TP(SETTINGS.trades_topic, 0)


class FakeConsumer(BatchingConsumer):
    """Every read-again request, and nothing else."""

    def __init__(self) -> None:  # no app, no broker
        self.fetched_again: list[tuple[TP, int]] = []

    async def fetch_again(self, tp: TP, offset: int) -> None:
        self.fetched_again.append((tp, offset))


def batch_event(first: int, last: int) -> Any:
    records = [SimpleNamespace(offset=offset) for offset in range(first, last + 1)]
    message = SimpleNamespace(partition=0, tp=TRADES, offset=last, generation_id=1)
    return SimpleNamespace(message=message, value=RecordBatch(records))


@pytest.fixture
def pipeline() -> Pipeline:
    return bare_pipeline(FakeConsumer(), SETTINGS)


async def test_a_batch_past_the_next_offset_is_refused_and_read_again(pipeline: Pipeline) -> None:
    """Offsets 6..8 were handed over and dropped before the pipeline (faust empties its
    queues at the end of a recovery, after its seek): the batch from 9 must wait for them."""
    await asyncio.wait_for(pipeline.handle(batch_event(9, 12)), timeout=5)
    assert pipeline.app.consumer.fetched_again == [(TRADES, 6)]
    assert pipeline._pending_events == {}  # not folded in, so never acked or committed


async def test_the_same_batch_read_again_is_a_gap_on_the_broker(pipeline: Pipeline) -> None:
    """Reading from 6 gave the batch from 9 again: the broker has nothing in between
    (transaction markers, deleted records), and it is folded in."""
    assert pipeline._skips_records(0, 5, 9)
    assert not pipeline._skips_records(0, 5, 9)
    assert pipeline._skips_records(0, 12, 20)  # a later gap is checked anew
    assert not pipeline._skips_records(0, 12, 13)  # read again, it follows on
    assert not pipeline._skips_records(0, 12, 10)  # a replay starts before: nothing skipped
    assert pipeline._skips_records(0, 30, 40)
