"""Commit bookkeeping for batch events: through every acked batch, never past one in flight;
and the batched topics' records handed over as aiokafka fetched them, a batch at a time, with
the positions aiokafka's own per-record reading gives."""

from __future__ import annotations

import struct
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.consumer.fetcher import FetchResult, PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st
from intervaltree import IntervalTree

from tradestats.service.transport import BatchingConsumer, RecordBatch, _BatchedFetches

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


def batch(
    base: int, offsets: list[int], *, last: int | None = None, control: bool = False
) -> bytes:
    """One record batch at ``base`` holding records at these offsets; ``last`` sets its last
    offset (records after the last one kept were compacted away), ``control`` marks it a
    control batch (both patched into the header, so the CRC no longer matches)."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for offset in offsets:
        builder.append(offset - base, 1_000 + offset, b"K", b"v%d" % offset, [])
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base)  # baseOffset
    if control:
        struct.pack_into(">h", data, 21, struct.unpack_from(">h", data, 21)[0] | 0x20)
    if last is not None:
        struct.pack_into(">i", data, 23, last - base)  # lastOffsetDelta
    return bytes(data)


def fetched(
    tp: TP, values: list[bytes], *, data: bytes | None = None, position: int = 0, crcs: bool = True
) -> FetchResult:
    """What aiokafka's fetcher keeps for a partition after a fetch from ``position``: one
    record batch of ``values``, or the batches in ``data``."""
    if data is None:
        builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
        for offset, value in enumerate(values):
            builder.append(offset, 1_000 + offset, b"K", value, [])
        data = bytes(builder.build())
    state = SimpleNamespace(paused=False, position=position)
    state.consumed_to = lambda offset: setattr(state, "position", offset)
    assignment = SimpleNamespace(active=True, state_value=lambda _: state)
    records = PartitionRecords(tp, MemoryRecords(data), [], position, None, None, crcs, 0)
    return FetchResult(tp, assignment=assignment, partition_records=records, backoff=0)


def test_batched_topics_hand_over_the_fetched_records_uncopied() -> None:
    """aiokafka copies every record it hands out into a ConsumerRecord; the fetcher buffer of
    a batching consumer skips that for the batched topics only."""
    buffered = _BatchedFetches(frozenset({"trades"}), {})
    other = TP("other", 0)
    buffered[TRADES] = fetched(TRADES, [b"a", b"b"])
    buffered[other] = fetched(other, [b"c"])
    trades = buffered[TRADES].getall()
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in trades] == [
        (0, 1_000, b"K", b"a", []),
        (1, 1_001, b"K", b"b", []),
    ]
    assert not any(isinstance(record, ConsumerRecord) for record in trades)
    assert not buffered[TRADES].has_more()
    (copied,) = buffered[other].getall()
    assert isinstance(copied, ConsumerRecord)
    assert (copied.topic, copied.offset, copied.value) == ("other", 0, b"c")


FETCH = b"".join(
    [
        batch(0, [0, 1, 2]),  # before the position: partly skipped
        batch(3, [3], control=True),  # a transaction marker: skipped
        batch(4, [4, 5, 7], last=9),  # 6 and 8..9 compacted away
        batch(10, [], last=11),  # every record compacted away
        batch(12, list(range(12, 25))),
        batch(25, [25], last=27),  # 26..27 compacted away: the position ends at FETCH_END
    ]
)


FETCH_END = 28


@given(st.lists(st.one_of(st.none(), st.integers(1, 20)), min_size=1, max_size=12))
def test_batches_are_taken_with_aiokafkas_records_and_positions(limits: list[int | None]) -> None:
    """Any sequence of getall(max_records) calls gives the records and positions that
    aiokafka's per-record reading gives for the same fetch; except that a read stopping at
    the fetch's last record moves the position to the fetch's end at once, where aiokafka
    gets there on the next read."""
    mine = _BatchedFetches(frozenset({"trades"}), {})
    mine[TRADES] = fetched(TRADES, [], data=FETCH, position=2, crcs=False)
    theirs = fetched(TRADES, [], data=FETCH, position=2, crcs=False)
    theirs._partition_records._consumer_record = lambda tp, record: record
    for limit in [*limits, 1, None]:  # as the fetcher asks: while either has more
        got = mine[TRADES].getall(limit) if mine[TRADES].has_more() else []
        want = theirs.getall(limit) if theirs.has_more() else []
        assert [r.offset for r in got] == [r.offset for r in want], limit
        mine_at = mine[TRADES]._assignment.state_value(TRADES).position
        theirs_at = theirs._assignment.state_value(TRADES).position
        at_the_end = bool(got) and got[-1].offset == 25 and mine_at == FETCH_END
        assert mine_at == theirs_at or at_the_end, (limit, mine_at, theirs_at)
    assert not mine[TRADES].has_more()
    assert not theirs.has_more()
    assert theirs_at == mine_at == FETCH_END


def test_getone_hands_out_the_next_record() -> None:
    buffered = _BatchedFetches(frozenset({"trades"}), {})
    buffered[TRADES] = fetched(TRADES, [], data=FETCH, position=2, crcs=False)
    offsets = []
    while buffered[TRADES].has_more() and (record := buffered[TRADES].getone()) is not None:
        offsets.append(record.offset)
    assert offsets == [2, 4, 5, 7, *range(12, 26)]


def test_a_corrupt_batch_is_refused() -> None:
    buffered = _BatchedFetches(frozenset({"trades"}), {})
    buffered[TRADES] = fetched(TRADES, [], data=batch(0, [0, 1], last=5))  # CRC now wrong
    with pytest.raises(CorruptRecordException, match="Invalid CRC"):
        buffered[TRADES].getall()
