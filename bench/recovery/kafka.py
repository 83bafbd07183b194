"""Kafka I/O of the benchmark: topics, offsets, producing the trades, reading the changelog.

The trades are produced straight into per-partition record batches: the usual one-``send``-
per-record loop costs tens of microseconds per record in Python, which would make building a
million-aggregate state a matter of minutes spent in the benchmark rather than the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tradestats.core.codec import PARTITION_META_KEY
from tradestats.core.trades import Trade, encode_trade
from tradestats.service.kafka import partition_for_key

__all__ = [
    "ChangelogScan",
    "GroupLag",
    "TradeWriter",
    "committed_offsets",
    "count_records",
    "create_topic",
    "delete_topics",
    "end_offsets",
    "scan_changelog",
    "topic_config",
]

#: Stream time of the first pane; any fixed, whole-second epoch works.
EPOCH_MS = 1_700_000_000_000
#: A ticker record's header: version, applied offset, number of pane parts (see codec).
_PANES_HEADER = struct.Struct("<BqI")


@contextlib.asynccontextmanager
async def _admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    async with _admin(bootstrap) as admin:
        await admin.create_topics([NewTopic(name, partitions, 1)])


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Delete what exists of ``names`` (a shared broker should not fill up with our runs)."""
    async with _admin(bootstrap) as admin:
        existing = set(await admin.list_topics())
        wanted = [n for n in names if n in existing]
        if wanted:
            await admin.delete_topics(wanted)


async def topic_config(bootstrap: str, topic: str, key: str) -> str | None:
    """One config value of a topic as the broker reports it."""
    async with _admin(bootstrap) as admin:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, None)]
        )
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == key:
                    return str(entry[1])
    return None


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets on ``topic`` (missing partitions: nothing committed)."""
    async with _admin(bootstrap) as admin:
        offsets = await admin.list_consumer_group_offsets(group)
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


class TradeWriter:
    """Writes one trade per ticker for one 1 s pane at a time (see the module docstring).

    Pane *k* trades are stamped ``EPOCH_MS + k * 1000 + 500``; every ticker gets exactly one
    trade per pane, so after *n* panes each ticker holds *n* pane aggregates, all live.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int, tickers: int) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self._names = [f"T{i:07d}" for i in range(tickers)]
        self._keys = [name.encode() for name in self._names]
        self._placement = [partition_for_key(key, partitions) for key in self._keys]
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> TradeWriter:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", max_batch_size=1024 * 1024
        )
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def write_pane(self, pane: int) -> int:
        """Produce pane ``pane``'s trades (acknowledged on return); returns how many."""
        producer = self._producer
        assert producer is not None, "use TradeWriter as an async context manager"
        timestamp = EPOCH_MS + pane * 1000 + 500
        batches = {p: producer.create_batch() for p in range(self.partitions)}
        sent = []
        for i, (name, key) in enumerate(zip(self._names, self._keys, strict=True)):
            value = encode_trade(Trade("ASK", name, 100.0 + i % 97 + pane / 100, i % 100))
            partition = self._placement[i]
            if batches[partition].append(key=key, value=value, timestamp=timestamp) is None:
                sent.append(
                    await producer.send_batch(batches[partition], self.topic, partition=partition)
                )
                batches[partition] = producer.create_batch()
                batches[partition].append(key=key, value=value, timestamp=timestamp)
            if i % 20_000 == 0:
                await asyncio.sleep(0)  # let the producer's sender task run
        for partition, batch in batches.items():
            if batch.record_count():
                sent.append(await producer.send_batch(batch, self.topic, partition=partition))
        await asyncio.gather(*sent)
        return len(self._names)


@dataclass
class ChangelogScan:
    """What the changelog holds now: records, live keys and the aggregates of their latest
    records, per partition."""

    records: dict[int, int] = field(default_factory=dict)
    live_keys: dict[int, int] = field(default_factory=dict)
    aggregates: dict[int, int] = field(default_factory=dict)

    @property
    def total_records(self) -> int:
        return sum(self.records.values())

    @property
    def total_live_keys(self) -> int:
        return sum(self.live_keys.values())

    @property
    def total_aggregates(self) -> int:
        return sum(self.aggregates.values())


async def _read_changelog(
    bootstrap: str,
    topic: str,
    partitions: int,
    apply: Callable[[int, list[ConsumerRecord[bytes, bytes]]], None],
) -> None:
    """Read every partition of ``topic`` from the beginning up to its end offset, handing each
    fetched batch to ``apply(partition, records)``."""
    ends = await end_offsets(bootstrap, topic, partitions)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if ends[tp.partition] > 0}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000, max_records=50_000)
            for tp, records in batches.items():
                apply(tp.partition, records)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp.partition]:
                    pending.discard(tp)
    finally:
        await consumer.stop()


async def scan_changelog(bootstrap: str, topic: str, partitions: int) -> ChangelogScan:
    """Read tradestats' whole changelog once, keeping the latest record of every key.

    A ticker record's header says how many pane parts it holds; a tombstone deletes the key;
    the partition clock record is a live key but holds no aggregate.
    """
    scan = ChangelogScan(records=dict.fromkeys(range(partitions), 0))
    latest: dict[int, dict[bytes, int]] = {p: {} for p in range(partitions)}

    def apply(partition: int, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        scan.records[partition] += len(records)
        keys = latest[partition]
        for record in records:
            if record.value is None:
                keys.pop(record.key, None)
            elif record.key == PARTITION_META_KEY:
                keys[record.key] = 0
            else:
                keys[record.key] = _PANES_HEADER.unpack_from(record.value)[2]

    await _read_changelog(bootstrap, topic, partitions, apply)
    scan.live_keys = {p: len(keys) for p, keys in latest.items()}
    scan.aggregates = {p: sum(keys.values()) for p, keys in latest.items()}
    return scan


async def count_records(bootstrap: str, topic: str, partitions: int) -> tuple[dict[int, int], int]:
    """(records per partition, live keys) of any changelog: what is left of it after
    compaction, and the keys not deleted."""
    records = dict.fromkeys(range(partitions), 0)
    live: set[tuple[int, bytes | None]] = set()

    def apply(partition: int, batch: list[ConsumerRecord[bytes, bytes]]) -> None:
        records[partition] += len(batch)
        for record in batch:
            if record.value is None:
                live.discard((partition, record.key))
            else:
                live.add((partition, record.key))

    await _read_changelog(bootstrap, topic, partitions, apply)
    return records, len(live)


class GroupLag:
    """How many trades the worker group has not yet committed (processed *and* checkpointed).

    The worker acknowledges a batch only after its state changes are in the changelog, and
    faust commits only acknowledged offsets: committed == end offset means the state is
    durable, which is what the state build waits for between panes.
    """

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self.group = group
        self.topic = topic
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)

    async def __aenter__(self) -> GroupLag:
        await self._admin.start()
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def lag(self) -> int:
        ends = await self._consumer.end_offsets(self._tps)
        committed = await self._admin.list_consumer_group_offsets(self.group, partitions=self._tps)
        return sum(
            max(0, end - max(0, committed[tp].offset if tp in committed else 0))
            for tp, end in ends.items()
        )
