"""The worker's own producer: window results, dead letters and changelog records, in batches.

Records are handed over per topic partition and sent as aiokafka record batches (one future per
batch, not per record). Handing them over never waits: they go into the partition's open batch
at once, and each partition's lane submits its batches to the producer in order, one after the
other, in the background. aiokafka takes a partition's next batch only once the previous one
left for the broker, so awaiting that on the hot path stalled the worker for a round trip per
output partition per input batch; now the next batch fills meanwhile, and gets the larger.
A checkpoint waits for what it covers with :meth:`Output.settle`, which is where delivery
failures are handled:

* an error that retrying can cure (a leader moved, a broker restarted, a request timed out, a
  producer whose idempotence state broke) replaces the producer with a new one and sends the
  failed batches again, for up to ``KAFKA_DELIVERY_TIMEOUT_MS``. A batch sent twice may leave
  duplicates; every record here is idempotent (the same key with the same value);
* a batch of several records that the broker refused as too large for its topic halves that
  topic's batches and is sent again the same way. Batches are built to fit each topic's
  ``max.message.bytes`` as read at start, so this happens only when that could not be read or
  went down since;
* an error that retrying cannot cure (authentication, authorisation, a record the broker will
  never take, a topic that does not exist) raises :class:`DeliveryError` at once, and so does a
  curable one that lasted past the bound: the worker stops with that message.

The producer tracks the metadata of every topic it writes from the start: aiokafka otherwise
tracks only topics missing from its first metadata, and a refresh for those alone dropped the
other topics' leaders, leaving their batches without a leader until they expired.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnknownTopicOrPartitionError,
)
from aiokafka.producer.message_accumulator import BatchBuilder

from tradestats.service.kafka import (
    DEAD_LETTER_MAX_BYTES,
    incurable_reason,
    producer_config,
)
from tradestats.service.topics import record_batch_limits
from tradestats.settings import Settings

__all__ = [
    "BATCH_BYTES_MAX",
    "NO_HEADERS",
    "Delivery",
    "DeliveryError",
    "Output",
    "OutputRecord",
    "fill_batch",
]

log = logging.getLogger(__name__)

#: (key, value, timestamp in ms or None, headers or None), then whatever its sender keeps with
#: it (a window result is sent as it is: see ``tradestats.core.codec.WindowResult``).
OutputRecord = tuple[
    bytes | None, bytes | None, int | None, list[tuple[str, bytes]] | None, *tuple[object, ...]
]

#: The headers of a record without any. None rather than an empty list: a tuple holding only
#: bytes, ints and None is untracked by the cyclic garbage collector once it has seen it, and
#: the records of a checkpoint interval (a million at thin densities) stay alive until their
#: batches are acknowledged; holding a list, each tuple stayed tracked and every full
#: collection walked them all.
NO_HEADERS = None
#: What aiokafka's batch builder gets for them (it takes a list only, and only reads it).
_EMPTY_HEADERS: list[tuple[str, bytes]] = []

#: A producer being replaced gets this long to hand back what it holds before it is dropped.
_STOP_TIMEOUT_S = 10.0
#: The largest record batch built. aiokafka keeps one produce request in flight per broker,
#: so the batch size sets what a round trip carries: at thin densities, where the worker
#: waits on its producer, 1 MiB batches against 256 KiB halved that wait (issue 11). It is
#: Kafka's default ``max.message.bytes`` (1,048,588) rounded down; a topic that allows less
#: gets batches of its own limit.
BATCH_BYTES_MAX = 1024 * 1024
#: Bytes in batches not handed to the producer yet, beyond which :meth:`Output.wait_for_room`
#: makes the worker wait: the memory bound (what was queued stays held, with its records,
#: until acknowledged). 64 MiB took the worker's peak RSS at 0.1 trades/ticker/s from about
#: 700 to 1,180 MiB, above the pods' 768 MiB limit, for no measurable speed (issue 11).
_MAX_UNSUBMITTED_BYTES = 16 * 1024 * 1024
#: The broker refused a batch as too large for its topic.
_TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)
_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


class DeliveryError(Exception):
    """Records could not be delivered and retrying will not help; the worker must stop."""


@dataclass(eq=False)
class Delivery:
    """One record batch for one partition, kept until acknowledged to be sent again.

    Its records may still grow until its lane submits it; ``future`` is done once the broker
    acknowledged (or the submission failed).
    """

    topic: str
    partition: int
    records: list[OutputRecord]
    future: asyncio.Future[Any] = field(repr=False)
    size: int = 0
    """Bytes of the batch as submitted."""

    @property
    def last_offset(self) -> int:
        """Offset of the batch's last record (a batch gets consecutive offsets)."""
        return int(self.future.result().offset) + len(self.records) - 1


class _Batch:
    """A batch being filled: aiokafka's builder and the delivery it becomes."""

    __slots__ = ("builder", "delivery")

    def __init__(self, builder: Any, delivery: Delivery) -> None:
        self.builder = builder
        self.delivery = delivery


class _Lane:
    """One topic partition's batches not yet submitted, oldest first (the last one still open)."""

    __slots__ = ("batches", "partition", "submitting", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.batches: deque[_Batch] = deque()
        self.submitting = False


class Output:
    """Sends record batches with one producer, replaced when it breaks (see module docstring)."""

    def __init__(self, settings: Settings, topics: Iterable[str]) -> None:
        self.settings = settings
        self.topics = sorted(set(topics))
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, int] = {}
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._submitters: set[asyncio.Task[None]] = set()
        # Handed to the current producer and not acknowledged yet: failed when it is replaced,
        # since a producer stopped with batches in hand may never complete their futures.
        self._submitted: set[Delivery] = set()
        self._unsubmitted_bytes = 0
        self._room = asyncio.Event()
        #: Per topic, the size of the batches built for it (see :meth:`_batch_sizes`).
        self.batch_bytes: dict[str, int] = {}

    async def start(self) -> None:
        self._producer = await self._new_producer()
        self.batch_bytes = await self._batch_sizes()

    async def stop(self) -> None:
        for task in list(self._submitters):
            task.cancel()  # nothing unacknowledged is covered by a checkpoint: it is replayed
        for lane in self._lanes.values():
            for batch in lane.batches:
                batch.delivery.future.cancel()
        self._lanes.clear()
        self._unsubmitted_bytes = 0
        self._room.set()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def partitions(self, topic: str) -> int:
        return self._partitions[topic]

    def send(self, topic: str, partition: int, records: Sequence[OutputRecord]) -> list[Delivery]:
        """Queue ``records`` (in order) for one partition, without waiting; returns the
        deliveries that hold them (the lane's open one among them). Never raises for a Kafka
        error: a failed batch is a delivery that failed, handled by :meth:`settle`."""
        if not records:
            return []
        lane = self._lanes.get((topic, partition))
        if lane is None:
            lane = self._lanes[(topic, partition)] = _Lane(topic, partition)
        batches = lane.batches
        batch = batches[-1] if batches else self._open_batch(lane)
        touched: list[Delivery] = []
        done = 0
        while True:
            builder = batch.builder
            size = builder.size()
            appended = fill_batch(builder, records, done)
            self._unsubmitted_bytes += builder.size() - size
            batch.delivery.records.extend(records[done:appended])
            touched.append(batch.delivery)
            if appended == len(records):
                break
            if appended == done and not batch.delivery.records:
                raise DeliveryError(f"a record for {topic} is larger than a whole batch")
            done = appended
            batch = self._open_batch(lane)
        if not lane.submitting:
            lane.submitting = True
            task = asyncio.get_running_loop().create_task(self._submit(lane))
            self._submitters.add(task)
            task.add_done_callback(self._submitters.discard)
        return touched

    async def wait_for_room(self) -> None:
        """Yield to the event loop (the lanes submit meanwhile), and wait while more bytes are
        queued than the producer takes, so a worker faster than its broker stays bounded."""
        await asyncio.sleep(0)
        while self._unsubmitted_bytes > _MAX_UNSUBMITTED_BYTES:
            self._room.clear()
            await self._room.wait()

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        """Return once every delivery is acknowledged, sending failed ones again."""
        failing_since: float | None = None
        attempt = 0
        pending = list(dict.fromkeys(deliveries))  # one delivery may be listed many times
        while pending:
            await asyncio.wait([d.future for d in pending])
            failed = [d for d in pending if d.future.exception() is not None]
            if not failed:
                return
            error = failed[0].future.exception()
            assert error is not None
            for delivery in self._not_cured_by_smaller_batches(failed):
                _raise_if_incurable(delivery.future.exception() or error, delivery.topic)
            now = time.monotonic()
            failing_since = failing_since or now
            bound = self.settings.kafka_delivery_timeout_ms / 1000.0
            if now - failing_since > bound:
                raise DeliveryError(
                    f"{len(failed)} record batch(es) to {failed[0].topic} still failing after "
                    f"{bound:.0f} s (KAFKA_DELIVERY_TIMEOUT_MS): {error!r}"
                ) from error
            log.warning(
                "%d record batch(es) to %s failed (%r): new producer, sending them again",
                len(failed),
                ", ".join(sorted({d.topic for d in failed})),
                error,
            )
            await asyncio.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
            attempt += 1
            await self._replace_producer()
            pending = list(
                dict.fromkeys(
                    resent
                    for delivery in failed
                    for resent in self.send(delivery.topic, delivery.partition, delivery.records)
                )
            )

    # --- internals -----------------------------------------------------------------------

    async def _batch_sizes(self) -> dict[str, int]:
        """Per topic, batches of :data:`BATCH_BYTES_MAX` or of its ``max.message.bytes`` if
        that is less: a topic created by someone else may take less than Kafka's default, and
        a batch above its limit is refused whole."""
        try:
            limits = await record_batch_limits(self.settings, self.topics)
        except Exception as exc:  # a refused batch still shrinks its topic's batches
            log.warning("cannot read the topics' max.message.bytes (%r)", exc)
            limits = {}
        sizes = {
            topic: min(BATCH_BYTES_MAX, limits.get(topic, BATCH_BYTES_MAX)) for topic in self.topics
        }
        for topic, size in sizes.items():
            if size < BATCH_BYTES_MAX:
                log.info(
                    "%s takes record batches of up to %d bytes: batches sized to fit", topic, size
                )
        return sizes

    def _not_cured_by_smaller_batches(self, failed: Sequence[Delivery]) -> list[Delivery]:
        """The failed deliveries, less those refused as too large that smaller batches cure.

        A batch of more than one record refused as too large for its topic (whose limit went
        down, or could not be read) halves the size of that topic's batches from then on; its
        records are sent again in batches that size. A single record too large stays refused.
        """
        uncured = []
        for delivery in failed:
            if not isinstance(delivery.future.exception(), _TOO_LARGE) or len(delivery.records) < 2:
                uncured.append(delivery)
                continue
            size = min(self.batch_bytes[delivery.topic], delivery.size // 2)
            if size < self.batch_bytes[delivery.topic]:
                log.warning(
                    "%s refused a batch of %d bytes as too large: batches of %d bytes from now on",
                    delivery.topic,
                    delivery.size,
                    size,
                )
                self.batch_bytes[delivery.topic] = size
        return uncured

    def _open_batch(self, lane: _Lane) -> _Batch:
        builder = BatchBuilder(self.batch_bytes[lane.topic], 0)  # uncompressed
        future = asyncio.get_running_loop().create_future()
        batch = _Batch(builder, Delivery(lane.topic, lane.partition, [], future))
        lane.batches.append(batch)
        return batch

    async def _submit(self, lane: _Lane) -> None:
        """Hand the lane's batches to the producer, oldest first, until none is left: while
        aiokafka holds one back (the previous batch has not left yet), the next one fills."""
        try:
            while lane.batches:
                batch = lane.batches.popleft()
                delivery = batch.delivery
                delivery.size = batch.builder.size()
                self._unsubmitted_bytes -= delivery.size
                self._room.set()
                producer = self._require_producer()
                submitted = self._submitted
                submitted.add(delivery)
                delivery.future.add_done_callback(partial(_forget, submitted, delivery))
                try:
                    sent = await producer.send_batch(
                        batch.builder, lane.topic, partition=lane.partition
                    )
                except Exception as exc:  # the delivery failed: settle() sends it again
                    _fail(delivery.future, exc)
                else:
                    sent.add_done_callback(partial(_settled, delivery.future))
        finally:
            lane.submitting = False

    async def _new_producer(self) -> AIOKafkaProducer:
        """A started producer that knows every topic it writes (retried while curable)."""
        attempt = 0
        while True:
            producer = AIOKafkaProducer(
                **producer_config(self.settings, max_request_size=DEAD_LETTER_MAX_BYTES)
            )
            looking_up = ", ".join(self.topics)
            try:
                await producer.start()
                await producer.client.set_topics(self.topics)
                for looking_up in self.topics:
                    self._partitions[looking_up] = len(await producer.partitions_for(looking_up))
                return producer
            except Exception as exc:
                await producer.stop()
                if isinstance(exc, UnknownTopicOrPartitionError):  # asked for, and not there
                    raise DeliveryError(f"topic {looking_up} does not exist (deleted?)") from exc
                _raise_if_incurable(exc, looking_up)
                delay = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
                log.warning("cannot start a producer (%r); trying again in %.1f s", exc, delay)
                attempt += 1
                await asyncio.sleep(delay)

    async def _replace_producer(self) -> None:
        old, self._producer = self._producer, await self._new_producer()
        handed, self._submitted = self._submitted, set()
        if old is not None:
            try:
                await asyncio.wait_for(old.stop(), _STOP_TIMEOUT_S)
            except Exception as exc:  # what it still held is sent again by settle()
                log.warning("the replaced producer did not stop cleanly: %r", exc)
        for delivery in handed:
            _fail(delivery.future, KafkaError("the producer was replaced before acknowledging"))

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("output producer not started")
        return self._producer


def fill_batch(builder: Any, records: Sequence[OutputRecord], start: int) -> int:
    """Append ``records[start:]`` to an aiokafka ``BatchBuilder`` until it is full (then it is
    closed); returns the index of the first record left out.

    ``BatchBuilder.append`` is a Python wrapper around the C builder's ``append`` (serializers,
    which this producer has none of, a closed check and the record count): called per record,
    the wrapper cost more than the C append it makes (0.95 against 0.35 us per record here).
    The count is kept up to date, since the idempotent producer's sequence numbers follow it
    (``record_count()``). tests/unit/test_output.py reads the batches built here back.
    """
    inner_append = builder._builder.append
    offset = builder._relative_offset
    empty = _EMPTY_HEADERS
    try:
        for index in range(start, len(records)):
            record = records[index]
            if inner_append(offset, record[2], record[0], record[1], record[3] or empty) is None:
                builder.close()
                return index
            offset += 1
        return len(records)
    finally:
        builder._relative_offset = offset


def _settled(delivery: asyncio.Future[Any], sent: asyncio.Future[Any]) -> None:
    """Pass aiokafka's outcome of a batch on to its delivery."""
    if sent.cancelled():
        _fail(delivery, KafkaError("the batch was cancelled (producer stopped)"))
    elif (error := sent.exception()) is not None:
        _fail(delivery, error)
    elif not delivery.done():
        delivery.set_result(sent.result())


def _forget(held: set[Delivery], delivery: Delivery, _: asyncio.Future[Any]) -> None:
    held.discard(delivery)


def _fail(delivery: asyncio.Future[Any], error: BaseException) -> None:
    if not delivery.done():
        delivery.set_exception(error)


def _raise_if_incurable(error: BaseException, topic: str) -> None:
    reason = incurable_reason(error)
    if reason is not None:
        raise DeliveryError(f"cannot write to {topic}: {reason}") from error
