"""The worker's output lanes against a stand-in producer: records queued without waiting, in
order, batched while the producer holds a partition's previous batch back, in batches that fit
the topic's record limit, and failed batches sent again with a new producer. Plus the
emit-latency histogram's exposition."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError, NotLeaderForPartitionError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from prometheus_client import generate_latest

from tradestats.service import output as output_module
from tradestats.service.metrics import Metrics
from tradestats.service.output import BATCH_BYTES_MAX, NO_HEADERS, Output, OutputRecord
from tradestats.settings import Settings

#: The topic's max.message.bytes as the stand-in broker describes it
LIMIT = 16 * 1024


@pytest.fixture(autouse=True)
def described_limits(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The topics' max.message.bytes as the broker describes them (a topic left out: not
    described)."""
    limits = {"out": LIMIT}

    async def describe(settings: Settings, names: list[str]) -> dict[str, int]:
        return {name: limits[name] for name in names if name in limits}

    monkeypatch.setattr(output_module, "record_batch_limits", describe)
    return limits


@dataclass
class _Sent:
    topic: str
    partition: int
    records: int
    acknowledged: asyncio.Future[Any]
    #: The batch as aiokafka's sender puts it on the wire
    wire: bytes


@dataclass
class StandInProducer:
    """Takes one batch per partition at a time, as aiokafka does: the next one waits until
    the test lets the previous one leave (``release``)."""

    sent: list[_Sent] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    _left: dict[tuple[str, int], asyncio.Event] = field(default_factory=dict)
    stopped: bool = False
    #: Every producer's sends, by producer: the test waits on it
    sends: asyncio.Queue[StandInProducer] | None = None
    #: The broker's record limit: a larger batch is refused as too large at once
    refuse_above: int | None = None

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        left = self._left.get((topic, partition))
        if left is not None:
            await left.wait()
        acknowledged = asyncio.get_running_loop().create_future()
        wire = bytes(batch._build())
        if self.refuse_above is not None and len(wire) > self.refuse_above:
            acknowledged.set_exception(MessageSizeTooLargeError())
        else:
            self._left[(topic, partition)] = asyncio.Event()
        self.sent.append(_Sent(topic, partition, batch.record_count(), acknowledged, wire))
        if self.sends is not None:
            self.sends.put_nowait(self)
        return acknowledged

    def release(self, error: Exception | None = None) -> None:
        """Every batch sent so far leaves and is acknowledged (or fails with ``error``)."""
        for sent in self.sent:
            if sent.acknowledged.done():
                continue
            if error is not None:
                sent.acknowledged.set_exception(error)
                continue
            tp = (sent.topic, sent.partition)
            offset = self.offsets.get(tp, 0)
            self.offsets[tp] = offset + sent.records
            sent.acknowledged.set_result(_Metadata(offset))
        for left in self._left.values():
            left.set()

    async def stop(self) -> None:
        self.stopped = True


@dataclass
class _Metadata:
    offset: int


def records(count: int, first: int = 0) -> list[OutputRecord]:
    return [(f"k{i}".encode(), b"v" * 100, 1000 + i, NO_HEADERS) for i in range(first, count)]


async def _output(
    producers: list[StandInProducer],
    sends: asyncio.Queue[StandInProducer] | None = None,
    refuse_above: int | None = None,
) -> Output:
    output = Output(Settings(), ["out"])

    async def new_producer() -> StandInProducer:
        producers.append(StandInProducer(sends=sends, refuse_above=refuse_above))
        return producers[-1]

    output._new_producer = new_producer  # type: ignore[assignment,method-assign]
    await output.start()
    return output


@pytest.mark.asyncio
async def test_records_queue_without_waiting_and_fill_the_next_batch_meanwhile() -> None:
    producers: list[StandInProducer] = []
    output = await _output(producers)
    producer = producers[0]
    first = output.send("out", 0, records(10))
    await asyncio.sleep(0)  # the lane hands the first batch over
    later = [output.send("out", 0, records(10 * (i + 2), 10 * (i + 1))) for i in range(3)]
    assert len(producer.sent) == 1  # held back: the 30 records wait in one open batch
    assert {id(d[0]) for d in later} == {id(later[0][0])}
    producer.release()
    await asyncio.sleep(0.01)
    assert [s.records for s in producer.sent] == [10, 30]
    producer.release()
    deliveries = first + [d for group in later for d in group]
    await asyncio.wait_for(output.settle(deliveries), 1)
    assert [d.last_offset for d in dict.fromkeys(deliveries)] == [9, 39]
    assert [r[0] for r in later[2][0].records] == [f"k{i}".encode() for i in range(10, 40)]


@pytest.mark.asyncio
async def test_batches_carry_exactly_the_records_sent_in_order() -> None:
    """Records appended to aiokafka's C builder directly (``fill_batch``): each batch on the wire
    holds its records with their keys, values, timestamps and headers, the record count the
    producer's sequence numbers follow agrees, and records spill into new batches in order."""
    producers: list[StandInProducer] = []
    output = await _output(producers)
    producer = producers[0]
    sent: list[OutputRecord] = [
        (f"k{i}".encode(), f"v{i}".encode() * 50, 1000 + i, [("h", b"%d" % i)] if i % 7 else None)
        for i in range(600)
    ]
    deliveries = output.send("out", 1, sent[:250]) + output.send("out", 1, sent[250:])
    for _ in range(20):
        await asyncio.sleep(0.01)
        producer.release()
    await asyncio.wait_for(output.settle(deliveries), 5)
    assert len(producer.sent) > 2, "600 records of about 200 bytes fit no 16 KiB batch"
    read = []
    for batch in producer.sent:
        assert len(batch.wire) <= LIMIT, "a batch above the topic's max.message.bytes"
        on_wire = list(DefaultRecordBatch(batch.wire))
        assert len(on_wire) == batch.records
        read += [(r.key, r.value, r.timestamp, r.headers or None) for r in on_wire]
    assert read == sent
    assert [r for d in dict.fromkeys(deliveries) for r in d.records] == sent


@pytest.mark.asyncio
async def test_a_failed_batch_is_sent_again_in_order_with_a_new_producer() -> None:
    producers: list[StandInProducer] = []
    sends: asyncio.Queue[StandInProducer] = asyncio.Queue()
    output = await _output(producers, sends)
    deliveries = output.send("out", 3, records(5))
    assert await asyncio.wait_for(sends.get(), 1) is producers[0]
    producers[0].release(NotLeaderForPartitionError())
    settling = asyncio.create_task(output.settle(deliveries))
    # settle backs off, replaces the producer and sends the batch again
    assert await asyncio.wait_for(sends.get(), 10) is producers[1]
    assert producers[0].stopped
    assert [(s.partition, s.records) for s in producers[1].sent] == [(3, 5)]
    producers[1].release()
    await asyncio.wait_for(settling, 5)


@pytest.mark.asyncio
async def test_batches_refused_as_too_large_shrink_until_they_fit(
    described_limits: dict[str, int],
) -> None:
    """The topic's limit could not be read, so its batches are as large as any: the broker
    refuses them as too large, and the worker halves that topic's batches until they fit,
    sending the refused records again. A record too large on its own stops the worker."""
    described_limits.clear()
    producers: list[StandInProducer] = []
    output = await _output(producers, refuse_above=20_000)
    assert output.batch_bytes == {"out": BATCH_BYTES_MAX}
    sent = records(600)
    deliveries = output.send("out", 2, sent)
    settling = asyncio.create_task(output.settle(deliveries))
    while not settling.done():
        await asyncio.sleep(0.01)
        producers[-1].release()
    await asyncio.wait_for(settling, 60)
    assert output.batch_bytes["out"] <= 20_000
    delivered = [
        batch
        for producer in producers
        for batch in producer.sent
        if batch.acknowledged.exception() is None
    ]
    assert all(len(batch.wire) <= 20_000 for batch in delivered)
    read = [r.key for batch in delivered for r in DefaultRecordBatch(batch.wire)]
    assert sorted(read) == sorted(key for key, *_ in sent)

    too_large = output.send("out", 2, [(b"big", b"x" * 30_000, 1, NO_HEADERS)])
    with pytest.raises(output_module.DeliveryError, match="larger than the broker accepts"):
        await asyncio.wait_for(output.settle(too_large), 10)


def test_emit_latency_counts_many_equal_observations_at_once() -> None:
    metrics = Metrics()
    metrics.emit_latency.observe(0.3, 5)
    metrics.emit_latency.observe(2.0, 1)
    metrics.emit_latency.observe(1000.0)
    text = generate_latest(metrics.registry).decode()
    assert 'tradestats_emit_latency_seconds_bucket{le="0.25"} 0.0' in text
    assert 'tradestats_emit_latency_seconds_bucket{le="0.5"} 5.0' in text
    assert 'tradestats_emit_latency_seconds_bucket{le="2.0"} 6.0' in text
    assert 'tradestats_emit_latency_seconds_bucket{le="+Inf"} 7.0' in text
    assert "tradestats_emit_latency_seconds_count 7.0" in text
    assert "tradestats_emit_latency_seconds_sum 1003.5" in text
