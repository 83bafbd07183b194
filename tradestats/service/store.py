"""The state table: a faust Table on RocksDB whose local store trails its changelog.

faust writes a table's local RocksDB first and its changelog afterwards, so after a crash the
local store can hold records the changelog never received. tradestats skips records its state
already holds, so such records would never be sent again and a later restore from the
changelog would miss them. Here the checkpoint goes the other way round: records are sent to
the changelog first and applied to RocksDB only once acknowledged, in one write batch together
with their changelog offset. The local store is then always a prefix of the changelog, exactly
what faust's own recovery and standby replicas maintain, so a warm restart, a cold restore and
a standby takeover all see the same state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import faust
import rocksdict
from faust.stores import rocksdb
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP, AppT
from mode.utils.queues import ThrowableQueue

from tradestats.service.restore import BulkRecovery
from tradestats.service.transport import BatchSchema

__all__ = ["CheckpointStore", "PromptTableManager", "StateTable"]


class PromptTableManager(TableManager):
    """faust's table manager without its one-second pause before it subscribes, with the bulk
    changelog restore (:class:`.restore.BulkRecovery`), and with a changelog queue that flow
    control never empties.

    faust waits a second for tables that modules may still define while they are imported;
    tradestats defines its one table before the app starts, and the pause was half the time
    from process start to ready.

    faust empties its changelog queue whenever flow resumes, and it resumes flow once more at
    the end of every recovery: after it resumed the standby partitions and sought the stream
    partitions. A standby batch fetched in between was dropped with the consumer already past
    it, leaving a hole in the standby copy that a later takeover served as state. Kept, a
    batch from before a rebalance is harmless here: :class:`.restore.BulkRecovery` writes only
    partitions still assigned, and only the records past what the store holds, so batches
    that come again after a seek add nothing.
    """

    @property
    def changelog_queue(self) -> ThrowableQueue:
        if self._changelog_queue is None:
            self._changelog_queue = self.app.FlowControlQueue(
                maxsize=self.app.conf.stream_buffer_maxsize, clear_on_resume=False
            )
        return self._changelog_queue

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = BulkRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery

    async def on_start(self) -> None:
        if not self.should_stop:  # stopped before it started: nothing to subscribe
            await self._update_channels()
            await self.recovery.start()


class CheckpointStore(rocksdb.Store):
    """faust's RocksDB store (rocksdict driver) with whole-checkpoint writes and partition scans."""

    def apply_checkpoint(
        self, writes: Sequence[tuple[bytes, bytes | None]], changelog: TP, offset: int
    ) -> None:
        """Atomically apply acknowledged changelog records and remember their last offset."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in writes:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(self.offset_key, str(offset).encode())
        self._db_for_partition(changelog.partition).write(batch)

    def apply_changelog_records(self, partition: int, records: Sequence[Any], offset: int) -> None:
        """Atomically write changelog records (aiokafka records, tombstones deleting) read
        from the changelog up to ``offset``, and that offset."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        put, delete = batch.put, batch.delete
        for record in records:
            value = record.value
            if value is None:
                delete(record.key)
            else:
                put(record.key, value)
        put(self.offset_key, str(offset).encode())
        self._db_for_partition(partition).write(batch)

    def partition_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every stored record of one partition (faust's own offset marker excluded)."""
        return self._visible_items(self._db_for_partition(partition))


class StateTable(faust.Table):
    """A faust Table whose store is a :class:`CheckpointStore`, restored in bulk, and whose
    recovery is reported.

    Its changelog is read in batches (the transport must batch the changelog topic, see
    :mod:`.transport`): each event holds a partition's fetched records, passed on as they are.
    """

    #: Called with the active partitions once faust has restored them after an assignment.
    on_recovered: Callable[[set[int]], Awaitable[None]] | None = None
    #: Called with (records, standby?) for every changelog batch applied to RocksDB.
    on_changelog_applied: Callable[[int, bool], None] | None = None

    def __init__(self, app: AppT, **kwargs: Any) -> None:
        super().__init__(app, schema=BatchSchema(), **kwargs)

    def _new_store_by_url(self, url: Any) -> CheckpointStore:
        return CheckpointStore(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )

    @property
    def store(self) -> CheckpointStore:
        store = self.data
        assert isinstance(store, CheckpointStore)
        return store

    def apply_changelog_records(
        self, tp: TP, records: Sequence[Any], offset: int, *, standby: bool
    ) -> None:
        """Write a batch of changelog records and its last offset (see :mod:`.restore`)."""
        self.store.apply_changelog_records(tp.partition, records, offset)
        if self.on_changelog_applied is not None:
            self.on_changelog_applied(len(records), standby)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        if self.on_recovered is not None:
            await self.on_recovered({tp.partition for tp in active_tps})
