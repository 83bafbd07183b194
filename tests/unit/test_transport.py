"""Commit bookkeeping for batch events: through every acked batch, never past one in flight;
and the batched topics' records handed over as aiokafka fetched them."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from aiokafka.consumer.fetcher import FetchResult, PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord
from faust.types import TP
from intervaltree import IntervalTree

from tradestats.service.transport import BatchingConsumer, RecordBatch, _UncopiedRecords

TRADES = TP("trades", 0)


def consumer() -> Any:
    instance: Any = object.__new__(BatchingConsumer)  # no app, no broker: only the bookkeeping
    instance.batched_topics = frozenset({"trades"})
    instance._acked = defaultdict(list)
    instance._acked_index = defaultdict(set)
    instance._unacked_messages = []
    return instance


def batch_message(first: int, last: int, acked: bool) -> Any:
    records = [SimpleNamespace(offset=offset) for offset in range(first, last + 1)]
    return SimpleNamespace(tp=TRADES, acked=acked, value=RecordBatch(records), offset=last)


def ack(instance: Any, message: Any) -> None:
    """What faust's Consumer.ack records for an acked message."""
    instance._acked[message.tp].append(message.offset)
    instance._acked_index[message.tp].add(message.offset)


def test_one_commit_covers_every_acked_batch() -> None:
    instance = consumer()
    for first in range(0, 5000, 1000):
        ack(instance, batch_message(first, first + 999, acked=True))
    assert instance._new_offset(TRADES) == 5000
    assert instance._acked[TRADES] == []
    assert instance._new_offset(TRADES) is None  # nothing new


def test_never_past_a_batch_still_in_flight() -> None:
    instance = consumer()
    ack(instance, batch_message(0, 999, acked=True))
    pending = batch_message(1000, 1999, acked=False)
    instance._unacked_messages.append(pending)
    assert len(pending.value.take()) == 1000  # folded in, not yet acked: still bounds commits
    ack(instance, batch_message(2000, 2999, acked=True))  # acked out of order
    assert instance._new_offset(TRADES) == 1000
    assert instance._acked[TRADES] == [2999]  # kept for later
    pending.acked = True
    ack(instance, pending)
    assert instance._new_offset(TRADES) == 3000


def test_other_topics_keep_fausts_bookkeeping() -> None:
    instance = consumer()
    changelog = TP("changelog", 0)
    instance._acked[changelog] = [0, 1, 2]
    instance._acked_index[changelog] = {0, 1, 2}
    instance._gap = defaultdict(IntervalTree)
    instance._committed_offset = defaultdict(lambda: None)
    assert instance._new_offset(changelog) == 3


def fetched(tp: TP, values: list[bytes]) -> FetchResult:
    """What aiokafka's fetcher keeps for a partition after a fetch of one record batch."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for offset, value in enumerate(values):
        builder.append(offset, 1_000 + offset, b"K", value, [])
    records = MemoryRecords(bytes(builder.build()))
    position = SimpleNamespace(paused=False, position=0, consumed_to=lambda offset: None)
    assignment = SimpleNamespace(active=True, state_value=lambda _: position)
    return FetchResult(
        tp,
        assignment=assignment,
        partition_records=PartitionRecords(tp, records, [], 0, None, None, True, 0),
        backoff=0,
    )


def test_batched_topics_hand_over_the_fetched_records_uncopied() -> None:
    """aiokafka copies every record it hands out into a ConsumerRecord; the fetcher buffer of
    a batching consumer skips that for the batched topics only."""
    buffered = _UncopiedRecords(frozenset({"trades"}), {})
    other = TP("other", 0)
    buffered[TRADES] = fetched(TRADES, [b"a", b"b"])
    buffered[other] = fetched(other, [b"c"])
    trades = buffered[TRADES].getall()
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in trades] == [
        (0, 1_000, b"K", b"a", []),
        (1, 1_001, b"K", b"b", []),
    ]
    assert not any(isinstance(record, ConsumerRecord) for record in trades)
    (copied,) = buffered[other].getall()
    assert isinstance(copied, ConsumerRecord)
    assert (copied.topic, copied.offset, copied.value) == ("other", 0, b"c")
