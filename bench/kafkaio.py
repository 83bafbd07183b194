"""The few Kafka operations the harness needs: topics, end offsets, a group's committed offsets.

One admin client and one group-less consumer serve the whole run, so polling progress every
fraction of a second costs the broker a handful of small requests, not new connections.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

__all__ = ["KafkaOps"]


class KafkaOps:
    """Admin and offset queries against one cluster (start with ``await ops.start()``)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def close(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def create_topics(
        self, names: Iterable[str], partitions: int, configs: dict[str, str] | None = None
    ) -> None:
        """Create topics (one replica, ``configs`` as topic configs) and wait until their
        metadata is visible."""
        names = list(names)
        with contextlib.suppress(TopicAlreadyExistsError):
            await self._admin.create_topics(
                [NewTopic(n, partitions, 1, topic_configs=configs or {}) for n in names]
            )
        for name in names:
            await self.partitions(name, wait=30.0)
        await self._wait_for_leaders(names, within=30.0)

    async def _wait_for_leaders(self, names: list[str], within: float) -> None:
        """Until the metadata names a leader for every partition of ``names``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        cluster = self._consumer._client.cluster
        while True:
            tps = [tp for name in names for tp in await self.partitions(name)]
            if all(cluster.leader_for_partition(tp) not in (None, -1) for tp in tps):
                return
            if loop.time() >= deadline:
                raise TimeoutError(f"no leader for some partitions of {names}")
            await asyncio.sleep(0.2)
            await self._consumer._client.force_metadata_update()

    async def delete_topics(self, names: Sequence[str]) -> None:
        existing = set(await self.list_topics())
        doomed = [name for name in names if name in existing]
        if doomed:
            with contextlib.suppress(UnknownTopicOrPartitionError):
                await self._admin.delete_topics(doomed)
        for name in doomed:
            self._partitions.pop(name, None)

    async def list_topics(self) -> list[str]:
        return list(await self._admin.list_topics())

    async def partitions(self, topic: str, wait: float = 0.0) -> list[TopicPartition]:
        """The topic's partitions (cached), waiting up to ``wait`` s for its metadata."""
        if topic in self._partitions:
            return self._partitions[topic]
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            await self._consumer._client.force_metadata_update()
            found = self._consumer.partitions_for_topic(topic)
            if found:
                tps = [TopicPartition(topic, p) for p in sorted(found)]
                self._partitions[topic] = tps
                return tps
            if asyncio.get_running_loop().time() >= deadline:
                raise LookupError(f"topic {topic!r} not found")
            await asyncio.sleep(0.2)

    async def end_offsets(self, topic: str) -> dict[int, int]:
        tps = await self.partitions(topic, wait=10.0)
        offsets = await self._consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in offsets.items()}

    async def end_total(self, topic: str) -> int:
        """Records ever written to the topic (the sum of its end offsets)."""
        return sum((await self.end_offsets(topic)).values())

    async def committed_total(self, group: str, topic: str) -> int:
        """Sum of the group's committed offsets on the topic (0 before any commit)."""
        try:
            offsets = await self._admin.list_consumer_group_offsets(group)
        except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
            return 0  # a fresh broker creates its offsets topic at the first group
        return sum(
            meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0
        )
