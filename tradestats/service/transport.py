"""Deliver the trades topic to the agent, and the state table's changelog to the restore, in
per-partition batches instead of one event per record.

faust turns every consumed record into a message, an event and a trip through the conductor,
a queue and the stream iterator: about 13 k events/s here for an agent that does nothing,
against 365 k records/s for a bare aiokafka loop. This module keeps all of faust's machinery
(consumer group, assignment, flow control, acks and commits, recovery) but hands the agent one
event per fetched batch of a partition, whose value is the list of aiokafka records. The event
carries the batch's last offset, so acking it commits the whole batch; faust records the offsets
in between as a gap, the same bookkeeping it uses for compacted topics.

The changelog's batches go to the table's bulk restore (:mod:`.restore`), for active recovery
and standby replication alike; any other topic is delivered record by record, as before.

The batches hold aiokafka's own records, as its C record reader yields them (offset, timestamp,
key, value, headers): for every record it hands out, aiokafka otherwise builds a
``ConsumerRecord`` copy of eleven fields, which cost 560 ns a record against 180 ns, more than
decoding the trade; and they are unpacked a record batch at a time (see
:class:`_BatchRecords`).

It also closes a hole in faust's fetch loop: faust drops fetched records it does not hand over
- those of a partition paused or revoked in the meantime, or all of them when the consumer
generation changed while it handed them over - yet the client's position has already moved past
them. Unless something seeks afterwards, those records are never read: after a rebalance a
partition the worker kept lost a run of trades, and a standby replica could lose changelog
records the same way. Here every record fetched but not handed over is fetched again: its
partition is sought back to it, unless someone sought since the fetch.

And it keeps the consumer's metadata refreshes from waiting for minutes (see
:class:`MetadataWatch`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable, Iterable, Iterator, Sequence
from typing import Any

import faust
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, FetchResult, PartitionRecords
from aiokafka.errors import CorruptRecordException
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, Message
from faust.types.tuples import ConsumerMessage
from mode import Service

__all__ = [
    "BatchSchema",
    "BatchingConsumer",
    "BatchingTransport",
    "MetadataWatch",
    "RecordBatch",
]

log = logging.getLogger(__name__)


class RecordBatch:
    """The records of one partition fetched together, in offset order (aiokafka records)."""

    __slots__ = ("first_offset", "records", "size")

    def __init__(self, records: Sequence[Any]) -> None:
        self.records = records
        self.first_offset: int = records[0].offset
        self.size = len(records)

    def take(self) -> Sequence[Any]:
        """The records, handed over once. The batch lets go of them, since faust keeps its
        event, and so the batch, until a checkpoint acks it: held that long, a second's worth
        of records reached the garbage collector's oldest generation, and every full
        collection walked them all again."""
        records, self.records = self.records, ()
        return records

    def __len__(self) -> int:
        return self.size


class BatchSchema(faust.Schema):
    """The batch is already decoded: hand it to the agent as it is."""

    def loads_key(self, app: AppT, message: Message, **kwargs: Any) -> Any:
        return message.key

    def loads_value(self, app: AppT, message: Message, **kwargs: Any) -> Any:
        return message.value


#: How long the broker may hold a fetch when there is nothing to read (faust hard-codes 1.5 s).
#: The broker answers one connection's requests in order, so every offset lookup that faust's
#: recovery makes waits behind the fetch in flight: at 1.5 s a start, rebalance or standby
#: takeover spent seconds in those lookups alone.
FETCH_MAX_WAIT_MS = 100


class _BatchRecords(PartitionRecords):
    """aiokafka 0.14's ``PartitionRecords`` of one fetch, its records made by the C reader a
    whole record batch at a time and handed out from one list: no ``ConsumerRecord`` copy per
    record, and none of the per-record Python of its generator and the generator's
    ``__next__`` (``FetchResult.getall`` iterates the list's own iterator). About 550 ns a
    record here, against 300 ns for the C reader itself.

    The position is where aiokafka's own would be: past the last record handed out, and past
    the fetch's last offset once every record is out (records compacted away, control
    batches); a read that stops exactly at the last record is already there. Only for
    read-uncommitted consumers, which faust's are: aborted transactions are not looked at.
    Its class is set on aiokafka's object (see :class:`_BatchedFetches`); its fields are
    made on first use.
    """

    _unpacked: list[Any] | None = None
    _iterator: Iterator[Any]
    _end: int

    def _records_unpacked(self) -> list[Any]:
        """Every record of the fetch from the position on (and the fetch's end offset)."""
        if self._unpacked is None:
            start = self.__dict__["next_fetch_offset"]  # where aiokafka's own fetch began
            unpacked: list[Any] = []
            end = start
            while self._records.has_next():
                batch = self._records.next_batch()
                if self._check_crcs and not batch.validate_crc():
                    raise CorruptRecordException(f"Invalid CRC - {self._tp}")
                end = max(end, batch.next_offset)
                if batch.is_control_batch:
                    continue
                records = list(batch)
                if records and records[0].offset < start:
                    records = [r for r in records if r.offset >= start]
                unpacked += records
            self._unpacked, self._iterator, self._end = unpacked, iter(unpacked), end
        return self._unpacked

    @property
    def next_fetch_offset(self) -> int:
        unpacked = self._records_unpacked()
        left = self._iterator.__length_hint__()  # type: ignore[attr-defined]
        if not left:
            return self._end
        if left == len(unpacked):
            return int(self.__dict__["next_fetch_offset"])
        return int(unpacked[-left - 1].offset) + 1

    def __iter__(self) -> Iterator[Any]:
        self._records_unpacked()
        return self._iterator

    def __next__(self) -> Any:
        self._records_unpacked()
        return next(self._iterator)


class _BatchedFetches(OrderedDict[TP, Any]):
    """The fetcher's buffer of fetched partitions (aiokafka 0.14's ``Fetcher._records``),
    whose partitions of the given topics hand out their records uncopied, unpacked a record
    batch at a time (:class:`_BatchRecords`); nothing else of the fetcher changes (positions,
    control batches, errors)."""

    def __init__(self, topics: frozenset[str], buffered: dict[TP, Any]) -> None:
        super().__init__()
        self.topics = topics
        for tp, result in buffered.items():
            self[tp] = result

    def __setitem__(self, tp: TP, result: Any) -> None:
        if tp.topic in self.topics and type(result) is FetchResult:
            records = result._partition_records
            if type(records) is PartitionRecords and records._isolation_level == READ_UNCOMMITTED:
                records._records_iterator = None  # never started; it would hold a cycle
                records.__class__ = _BatchRecords
        super().__setitem__(tp, result)


#: How long a metadata refresh of the consumer may stay pending before its task is woken.
METADATA_REFRESH_STUCK_S = 10.0


class MetadataWatch:
    """Keeps the consumer's metadata refreshes from waiting for minutes (aiokafka 0.14's
    ``AIOKafkaClient``).

    A forced refresh is a future that the client's metadata task resolves on its next pass;
    the task sleeps until a force wakes it, or for ``metadata_max_age_ms`` (5 minutes). A
    force that comes while a refresh is pending wakes nothing, and if the topics changed
    during a pass that no force had woken, the task goes back to sleep with the refresh
    still pending: every force then waits the full 5 minutes. Meanwhile the fetcher keeps
    asking a broker that is gone for the partitions it led, and a coordinator lookup waits
    on the refresh, so no commit, and no checkpoint, goes through. A CI run showed exactly
    that for two minutes after the broker that was the group's coordinator was killed
    (tests/scenarios/test_cluster_faults.py). A refresh pending for ``stuck_after`` seconds
    while the task sleeps wakes it; a task that ended is started again. Either is logged.
    """

    def __init__(self, stuck_after: float = METADATA_REFRESH_STUCK_S) -> None:
        self.stuck_after = stuck_after
        self._pending: asyncio.Future[Any] | None = None
        self._seen_at = 0.0

    def check(self, client: Any, now: float) -> None:
        """Look at ``client``'s refresh once (call it regularly, on the client's loop)."""
        refresh = client._md_update_fut
        task = client._sync_task
        if refresh is None or refresh.done() or task is None or task.cancelled():
            self._pending = None  # none pending, or the client is closing
            return
        if refresh is not self._pending:
            self._pending, self._seen_at = refresh, now
            return
        waited = now - self._seen_at
        if waited < self.stuck_after:
            return
        if task.done():
            log.warning(
                "consumer metadata refresh pending for %.0f s and aiokafka's metadata task "
                "ended (%r): starting it again",
                waited,
                task.exception(),
            )
            client._sync_task = asyncio.get_running_loop().create_task(client._md_synchronizer())
        elif not client._md_update_waiter.done():  # asleep, not waiting on a broker
            log.warning(
                "consumer metadata refresh pending for %.0f s: waking aiokafka's metadata task",
                waited,
            )
            client._md_update_waiter.set_result(None)
        self._pending = None  # look again after as long


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread, with a short fetch wait (see ``FETCH_MAX_WAIT_MS``), handing
    the batched topics' records over uncopied (see the module docstring), its client's
    metadata refreshes watched (:class:`MetadataWatch`)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by the fetcher it builds on start
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        consumer = self.consumer
        assert isinstance(consumer, BatchingConsumer)
        fetcher = self._ensure_consumer()._fetcher
        fetcher._records = _BatchedFetches(consumer.batched_topics, fetcher._records)

    @Service.task
    async def _watch_metadata(self) -> None:
        """Runs on the consumer thread's loop, beside the client (see :class:`MetadataWatch`)."""
        watch = MetadataWatch()
        while not self.should_stop:
            await self.sleep(1.0)
            if self._consumer is not None:
                watch.check(self._consumer._client, time.monotonic())

    async def rewind(self, tp: TP, offset: int, *, if_at: int | None) -> None:
        """Seek ``tp`` back to ``offset`` if its position is still ``if_at`` (nobody sought
        since the records up to there were fetched), or in any case if ``if_at`` is None."""
        await self.call_thread(self._rewind, tp, offset, if_at)

    async def _rewind(self, tp: TP, offset: int, if_at: int | None) -> None:
        consumer = self._ensure_consumer()
        subscription = consumer._subscription
        if not subscription.is_assigned(tp):
            return
        # Read the position without waiting: ``consumer.position()`` waits for a position
        # being reset, and a call that never returns would keep this thread from stopping.
        state = subscription.subscription.assignment.state_value(tp)
        if state.has_valid_position and if_at in (None, state.position):
            consumer.seek(tp, offset)  # synchronous: no fetch can move it meanwhile
            log.info("%s: fetching again from offset %d", tp, offset)

    async def cluster_view(self, partitions: Sequence[TP], refresh: bool) -> Hashable:
        """See :meth:`BatchingConsumer.cluster_view`."""
        view: Hashable = await self.call_thread(self._cluster_view, partitions, refresh)
        return view

    async def _cluster_view(self, partitions: Sequence[TP], refresh: bool) -> Hashable:
        client = self._ensure_consumer()._client
        if refresh:
            await client.force_metadata_update()
        cluster = client.cluster
        states = []
        for tp in partitions:
            found = cluster._partitions.get(tp.topic, {}).get(tp.partition)
            states.append((tp, found and (found.leader, tuple(sorted(found.isr)))))
        return frozenset(broker.nodeId for broker in cluster.brokers()), tuple(states)


class BatchingConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer, wrapping the batched topics' records into one message each."""

    batched_topics: frozenset[str] = frozenset()
    #: (first, last) offset of what the current getmany fetched, per partition
    _fetched: dict[TP, tuple[int, int]]

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:  # noqa: ASYNC109
        """faust's getmany, then the records it fetched but did not hand over fetched again."""
        self._fetched = {}
        delivered: dict[TP, int] = {}
        async for tp, message in super().getmany(timeout):
            delivered[tp] = message.offset  # a batch's message carries its last offset
            yield tp, message
        thread = self._thread
        assert isinstance(thread, _ConsumerThread)
        if self.should_stop or thread.should_stop:
            return  # stopping: the thread takes no more calls, and nothing will be read
        for tp, (first, last) in self._fetched.items():
            resume = delivered.get(tp, first - 1) + 1
            if resume <= last:
                await thread.rewind(tp, resume, if_at=last + 1)

    async def fetch_again(self, tp: TP, offset: int) -> None:
        """Read ``tp`` again from ``offset`` (see ``Pipeline._skips_records``)."""
        thread = self._thread
        assert isinstance(thread, _ConsumerThread)
        await thread.rewind(tp, offset, if_at=None)

    async def cluster_view(self, partitions: Sequence[TP], *, refresh: bool) -> Hashable:
        """The brokers, and the leader and in-sync replicas of each partition, as the
        consumer's metadata says (fetched anew first if ``refresh``): equal views mean
        nothing moved in between that the metadata showed."""
        thread = self._thread
        assert isinstance(thread, _ConsumerThread)
        return await thread.cluster_view(partitions, refresh)

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:  # noqa: ASYNC109
        records, active_partitions = await super()._wait_next_records(timeout)
        if records:
            self._fetched = {
                tp: (batch[0].offset, batch[-1].offset) for tp, batch in records.items() if batch
            }
            batched = self.batched_topics
            records = {
                tp: [RecordBatch(batch)] if tp.topic in batched and batch else batch
                for tp, batch in records.items()
            }
        return records, active_partitions

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # faust records the offsets a message skips as a "gap" to commit through them; for a
        # batch those are its own records, and expanding them offset by offset (with the batch's
        # last offset counted twice) made every commit advance by a single batch.
        if tp.topic not in self.batched_topics:
            await super()._add_gap(tp, offset_from, offset_to)

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit: through the newest acked batch, never past one in progress."""
        if tp.topic not in self.batched_topics:
            return super()._new_offset(tp)
        acked = self._acked[tp]
        if not acked:
            return None
        upto = max(acked) + 1
        for message in self._unacked_messages:
            batch = message.value
            if message.tp == tp and not message.acked and isinstance(batch, RecordBatch):
                upto = min(upto, batch.first_offset)
        done = [offset for offset in acked if offset < upto]
        if not done:
            return None
        acked[:] = [offset for offset in acked if offset >= upto]
        self._acked_index[tp].difference_update(done)
        return upto

    def _to_message(self, tp: TP, record: Any) -> ConsumerMessage:
        if not isinstance(record, RecordBatch):
            return super()._to_message(tp, record)
        last = record.records[-1]
        return ConsumerMessage(
            tp.topic,
            tp.partition,
            last.offset,
            last.timestamp / 1000.0,
            last.timestamp_type,
            None,
            None,
            record,  # type: ignore[arg-type]  # the batch travels as the message value
            None,
            0,
            len(record),
            tp,
            generation_id=self.app.consumer_generation_id,
        )


class BatchingTransport(faust_aiokafka.Transport):
    """The aiokafka transport whose consumer batches the given topics (see module docstring)."""

    Consumer = BatchingConsumer

    def __init__(self, urls: Iterable[Any], app: AppT, batched_topics: Iterable[str]) -> None:
        super().__init__(list(urls), app)
        self.batched_topics = frozenset(batched_topics)

    def create_consumer(self, callback: Any, **kwargs: Any) -> Any:
        consumer = super().create_consumer(callback, **kwargs)
        assert isinstance(consumer, BatchingConsumer)
        consumer.batched_topics = self.batched_topics
        return consumer
