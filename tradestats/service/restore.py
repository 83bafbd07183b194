"""Changelog restore in bulk: each fetched batch of a changelog partition is one RocksDB write.

faust restores a table record by record: every changelog record becomes a message, an event,
a trip through the conductor and the changelog queue (32 events deep here), a task for the
fetch loop's ``wait_first`` and another for the queue's ``wait_for``, and two formatted debug
lines, before faust buffers it and applies a thousand at a time. That is about 10,000 records/s,
a tenth of what the consumer fetches. Here the transport hands over a partition's whole fetched
batch as one event (:mod:`.transport`), and :class:`BulkRecovery` applies it at once: the
records after the offset the store already holds, together with the batch's last offset, in
one write batch (:meth:`.store.CheckpointStore.apply_changelog_records`).

Everything else is faust's recovery as it is - the assignment, seeking to the stored offset,
the high-water marks, pausing and resuming, the signal that ends a restore - and it sees the
same bookkeeping: the offset key in each partition's database and faust's active and standby
offsets always say what RocksDB holds, no more (faust moved its offsets on when it buffered a
record, before the record was written). Standby replicas tail their changelog partitions
through the same path, so a standby copy is at most one fetched batch behind what was read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from faust.tables.recovery import Recovery
from faust.types import TP, AppT, EventT
from faust.types.tables import TableManagerT
from mode import Service

from tradestats.service.transport import RecordBatch

__all__ = ["BulkRecovery", "BulkRestorable", "records_after"]

log = logging.getLogger(__name__)

#: How long the applier waits for a batch before it checks again whether the restore is done
#: (faust's value). A restore normally ends on the batch that reaches the high-water mark.
_IDLE_SECONDS = 5.0


@runtime_checkable
class BulkRestorable(Protocol):
    """A table that writes a batch of its changelog records to its store in one go."""

    def apply_changelog_records(
        self, tp: TP, records: Sequence[Any], offset: int, *, standby: bool
    ) -> None:
        """Write ``records`` (aiokafka records of changelog partition ``tp``) and ``offset``."""


def records_after(records: Sequence[Any], offset: int | None) -> Sequence[Any]:
    """The records of an offset-ordered batch past ``offset`` (``None``: all of them).

    A restore starts *at* the stored offset (faust seeks there, not past it), and a standby
    may fetch again what it already holds: those records are in the store already.
    """
    if offset is None or not records or records[0].offset > offset:
        return records
    start = next((i for i, record in enumerate(records) if record.offset > offset), len(records))
    return records[start:]


class _Replay:
    """Records applied since a restore (or a standby catch-up) began, for its log line."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.started: float | None = None
        self.records = 0

    def start(self) -> None:
        self.started, self.records = time.monotonic(), 0

    def finish(self, partitions: Iterable[TP]) -> None:
        """Log what was applied since :meth:`start`, if anything, and stop counting."""
        if self.started is not None and self.records:
            seconds = time.monotonic() - self.started
            log.info(
                "%s: %d changelog records of partitions %s in %.3f s (%.0f records/s)",
                self.what,
                self.records,
                sorted(tp.partition for tp in partitions),
                seconds,
                self.records / max(seconds, 1e-9),
            )
        self.started = None


class BulkRecovery(Recovery):
    """faust's table recovery, applying changelog batches in bulk (see the module docstring)."""

    def __init__(self, app: AppT, tables: TableManagerT, **kwargs: Any) -> None:
        super().__init__(app, tables, **kwargs)
        self._restore = _Replay("restored")
        self._standby_catch_up = _Replay("standby copies caught up")
        #: The standby partitions assigned by the latest rebalance have not caught up yet.
        self._standbys_behind = False

    @Service.task
    async def _slurp_changelogs(self) -> None:
        """Apply every changelog batch the consumer delivers; signal when actives are done.

        Replaces faust's task of the same name, which applies events one by one.
        """
        queue = self.tables.changelog_queue
        while not self.should_stop:
            self.signal_recovery_end.clear()
            try:
                event = await asyncio.wait_for(queue.get(), timeout=_IDLE_SECONDS)
            except TimeoutError:
                self._signal_if_restored()
                continue
            try:
                standby = self._apply(event)
            except Exception as exc:
                # A write that failed wrote nothing (one batch, one write): the store is still
                # a prefix of the changelog. Carrying on would leave a hole in it.
                log.exception("changelog batch not applied: stopping")
                await self.app.crash(exc)
                return
            self._signal_if_restored()
            if standby and self._standbys_behind and not self.standby_remaining_total():
                self._standbys_behind = False
                self._standby_catch_up.finish(self.standby_tps)
            if not self.tables.standbys_ready and not self.standby_remaining_total():
                self.tables.on_standbys_ready()

    def _apply(self, event: EventT) -> bool:
        """Write the batch's new records; returns whether it was a standby partition's."""
        batch = event.value
        assert isinstance(batch, RecordBatch), f"changelog event of {type(batch).__name__}"
        tp = event.message.tp
        standby = tp in self.standby_tps
        if standby:
            offsets, replay = self.standby_offsets, self._standby_catch_up
            self._standby_events_received_at[tp] = time.monotonic()
        elif tp in self.active_tps:
            offsets, replay = self.active_offsets, self._restore
            self._active_events_received_at[tp] = time.monotonic()
        else:
            return False  # fetched before a rebalance took the partition away: not ours
        records = records_after(batch.take(), offsets.get(tp))
        if records:
            table = self.tp_to_table[tp]
            assert isinstance(table, BulkRestorable), f"{tp.topic}: its table has no bulk restore"
            last = records[-1].offset
            table.apply_changelog_records(tp, records, last, standby=standby)
            offsets[tp] = last
            replay.records += len(records)
            self._last_flush_at = time.monotonic()
        return standby

    def _signal_if_restored(self) -> None:
        """Set faust's end-of-restore signal once every active partition is up to date.

        (faust also checks for aborted transactions here; tradestats does not use them.)
        """
        if self.in_recovery and not self.need_recovery():
            self._set_recovery_ended()
            self.signal_recovery_end.set()

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        self._standbys_behind = bool(self.standby_tps)
        self._standby_catch_up.started = None

    def _set_recovery_started(self) -> None:
        super()._set_recovery_started()
        self._restore.start()  # faust calls this again just before it starts fetching

    def _set_recovery_ended(self) -> None:
        self._restore.finish(self.active_tps)
        if self._standbys_behind and self._standby_catch_up.started is None:
            self._standby_catch_up.start()  # faust starts fetching standbys next
        super()._set_recovery_ended()

    def standby_remaining(self) -> Counter[TP]:
        """Changelog records each standby partition is behind, never negative.

        faust counts against the high-water marks it read when the standbys started, skips
        partitions whose copy is still empty (offset -1), and goes negative once a standby
        passes that mark under load. Here the mark is the newest the consumer has seen.
        """
        consumer = self.app.consumer
        try:
            assigned = consumer.assignment()
        except Exception:  # no consumer (starting, stopping): nothing is being replicated
            return Counter()
        remaining: Counter[TP] = Counter()
        for tp, highwater in self.standby_highwaters.items():
            offset = self.standby_offsets.get(tp)
            if highwater is None or offset is None:
                continue
            if tp in assigned:
                seen = consumer.highwater(tp)
                if seen is not None:
                    highwater = max(highwater, seen - 1)
            remaining[tp] = max(0, highwater - offset)
        return remaining
