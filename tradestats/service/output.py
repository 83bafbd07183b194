"""The worker's own producer: window results, dead letters and changelog records, in batches.

Records are handed over per topic partition and sent as aiokafka record batches (one future per
batch, not per record). A checkpoint waits for what it covers with :meth:`Output.settle`, which
is where delivery failures are handled:

* an error that retrying can cure (a leader moved, a broker restarted, a request timed out, a
  producer whose idempotence state broke) replaces the producer with a new one and sends the
  failed batches again, for up to ``KAFKA_DELIVERY_TIMEOUT_MS``. A batch sent twice may leave
  duplicates; every record here is idempotent (the same key with the same value);
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError

from tradestats.service.kafka import (
    DEAD_LETTER_MAX_BYTES,
    incurable_reason,
    producer_config,
)
from tradestats.settings import Settings

__all__ = ["Delivery", "DeliveryError", "Output", "OutputRecord"]

log = logging.getLogger(__name__)

#: (key, value, timestamp in ms or None, headers)
OutputRecord = tuple[bytes | None, bytes | None, int | None, list[tuple[str, bytes]]]

#: A producer being replaced gets this long to hand back what it holds before it is dropped.
_STOP_TIMEOUT_S = 10.0
_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


class DeliveryError(Exception):
    """Records could not be delivered and retrying will not help; the worker must stop."""


@dataclass(eq=False)
class Delivery:
    """One record batch sent to one partition, kept until acknowledged to be sent again."""

    topic: str
    partition: int
    records: list[OutputRecord]
    future: asyncio.Future[Any] = field(repr=False)

    @property
    def last_offset(self) -> int:
        """Offset of the batch's last record (a batch gets consecutive offsets)."""
        return int(self.future.result().offset) + len(self.records) - 1


class Output:
    """Sends record batches with one producer, replaced when it breaks (see module docstring)."""

    def __init__(self, settings: Settings, topics: Iterable[str]) -> None:
        self.settings = settings
        self.topics = sorted(set(topics))
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, int] = {}

    async def start(self) -> None:
        self._producer = await self._new_producer()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def partitions(self, topic: str) -> int:
        return self._partitions[topic]

    async def send(
        self, topic: str, partition: int, records: Sequence[OutputRecord]
    ) -> list[Delivery]:
        """Queue ``records`` (in order) for one partition; never raises for a Kafka error: a
        failed batch is a delivery that failed, handled by :meth:`settle`."""
        deliveries = []
        producer = self._require_producer()
        batch = producer.create_batch()
        start = 0
        for index, (key, value, timestamp, headers) in enumerate(records):
            if batch.append(key=key, value=value, timestamp=timestamp, headers=headers) is None:
                if index == start:
                    raise DeliveryError(f"a record for {topic} is larger than a whole batch")
                deliveries.append(await self._submit(batch, topic, partition, records[start:index]))
                batch = producer.create_batch()
                start = index
                batch.append(key=key, value=value, timestamp=timestamp, headers=headers)
        if start < len(records):
            deliveries.append(await self._submit(batch, topic, partition, records[start:]))
        return deliveries

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        """Return once every delivery is acknowledged, sending failed ones again."""
        failing_since: float | None = None
        attempt = 0
        while deliveries:
            await asyncio.wait([d.future for d in deliveries])
            failed = [d for d in deliveries if d.future.exception() is not None]
            if not failed:
                return
            error = failed[0].future.exception()
            assert error is not None
            _raise_if_incurable(error, failed[0].topic)
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
            deliveries = [
                resent
                for delivery in failed
                for resent in await self.send(delivery.topic, delivery.partition, delivery.records)
            ]

    # --- internals -----------------------------------------------------------------------

    async def _submit(
        self, batch: Any, topic: str, partition: int, records: Sequence[OutputRecord]
    ) -> Delivery:
        try:
            future = await self._require_producer().send_batch(batch, topic, partition=partition)
        except KafkaError as exc:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
        return Delivery(topic, partition, list(records), future)

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
        if old is not None:
            try:
                await asyncio.wait_for(old.stop(), _STOP_TIMEOUT_S)
            except Exception as exc:  # what it still held is sent again by settle()
                log.warning("the replaced producer did not stop cleanly: %r", exc)

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("output producer not started")
        return self._producer


def _raise_if_incurable(error: BaseException, topic: str) -> None:
    reason = incurable_reason(error)
    if reason is not None:
        raise DeliveryError(f"cannot write to {topic}: {reason}") from error
