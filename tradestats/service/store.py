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

from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

import faust
import rocksdict
from faust.stores import rocksdb
from faust.tables.manager import TableManager
from faust.types import TP, EventT

__all__ = ["CheckpointStore", "PromptTableManager", "StateTable"]


class PromptTableManager(TableManager):
    """faust's table manager without its one-second pause before it subscribes.

    faust waits a second for tables that modules may still define while they are imported;
    tradestats defines its one table before the app starts, and the pause was half the time
    from process start to ready.
    """

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

    def partition_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every stored record of one partition (faust's own offset marker excluded)."""
        return self._visible_items(self._db_for_partition(partition))


class StateTable(faust.Table):
    """A faust Table whose store is a :class:`CheckpointStore` and whose recovery is reported."""

    #: Called with the active partitions once faust has restored them after an assignment.
    on_recovered: Callable[[set[int]], Awaitable[None]] | None = None
    #: Called with (records, standby?) for every changelog batch faust applies to RocksDB.
    on_changelog_applied: Callable[[int, bool], None] | None = None

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

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        events = list(batch)
        super().apply_changelog_batch(events)
        if self.on_changelog_applied is not None and events:
            standby = self.app.assignor.is_standby(events[0].message.tp)
            self.on_changelog_applied(len(events), standby)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        if self.on_recovered is not None:
            await self.on_recovered({tp.partition for tp in active_tps})
