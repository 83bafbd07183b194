"""Results go out in slices, with the event loop turning in between (the producer's answers
are read, and its next request sent, while a large window close is still being computed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.pipelines import bare_pipeline
from tests.unit.test_batch_order import FakeConsumer
from tradestats.core.codec import WindowResult, WindowStats, decode_windowed_key, encode_result
from tradestats.service import pipeline as pipeline_module
from tradestats.settings import Settings

pytestmark = pytest.mark.asyncio

RESULTS = 2_345
OUTPUT_PARTITIONS = 3


class RecordingOutput:
    """Every record queued, with how many results had been computed when it was."""

    def __init__(self, computed: list[int]) -> None:
        self.computed = computed
        self.queued: list[tuple[int, bytes, bytes, int]] = []  # partition, key, value, computed

    def partitions(self, topic: str) -> int:
        return OUTPUT_PARTITIONS

    def send(self, topic: str, partition: int, records: Any) -> list[Any]:
        self.queued += [(partition, key, value, self.computed[0]) for key, value, *_ in records]
        return []


def windows(computed: list[int]) -> Iterator[WindowResult]:
    for i in range(RESULTS):
        computed[0] += 1
        start = 1000 * (i // 1000)
        yield encode_result(
            WindowStats(f"T{i:05d}", "ASK", 1, 1.5, 1.5, 1.5, 1.5, 2, 1.5, start, start + 5000),
            route=i % OUTPUT_PARTITIONS,
        )


async def test_a_large_close_is_computed_and_queued_in_slices_between_loop_turns() -> None:
    computed = [0]
    pipeline = bare_pipeline(FakeConsumer(), Settings())
    output = RecordingOutput(computed)
    pipeline.output = output  # type: ignore[assignment]
    seen_by_the_loop: list[int] = []
    done = asyncio.Event()

    async def other_task() -> None:
        while not done.is_set():
            seen_by_the_loop.append(computed[0])
            await asyncio.sleep(0)

    watcher = asyncio.get_running_loop().create_task(other_task())
    await asyncio.sleep(0)
    await pipeline._send_results(0, windows(computed))
    done.set()
    await watcher

    # everything queued once, in order within each output partition, keyed by its window
    queued = [
        (p, decode_windowed_key(key), json.loads(value)) for p, key, value, _ in output.queued
    ]
    expected = [(f"T{i:05d}", 1000 * (i // 1000)) for i in range(RESULTS)]
    assert sorted(key for _, key, _ in queued) == expected
    for partition in range(OUTPUT_PARTITIONS):
        keys = [key for p, key, _ in queued if p == partition]
        assert keys == sorted(keys), f"partition {partition} out of order"
    # each in the partition its result was routed to
    assert all(p == int(key[0][1:]) % OUTPUT_PARTITIONS for p, key, _ in queued)
    assert all(v["ticker"] == key[0] and v["windowStart"] == key[1] for _, key, v in queued)
    # computed lazily, a slice at a time, and the other task ran between the slices
    slice_size = pipeline_module._EMIT_SLICE
    assert slice_size < RESULTS
    during = sorted({c for c in seen_by_the_loop if 0 < c < RESULTS})
    assert len(during) >= RESULTS // slice_size, (during, slice_size)
    order = {key: i for i, key in enumerate(expected)}
    assert all(
        computed_then - order[key] <= slice_size
        for (_, key, _), (_, _, _, computed_then) in zip(queued, output.queued, strict=True)
    ), "a result was queued more than a slice after it was computed"
