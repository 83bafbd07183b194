"""The worker's processing loop around :class:`PartitionState`: batches in; results, dead letters
and checkpoints out; state restored after every assignment.

The order of operations is what makes the results exact under failure (see
:mod:`tradestats.core.partition`):

1. A batch is folded into its partition's state; windows it closes are sent at once, and so
   are its dead letters. Its event is *not* acknowledged yet.
2. Every ``COMMIT_INTERVAL_MS`` (and at once on rebalance or shutdown) a checkpoint is taken:
   the state's changed records are snapshotted; every result sent before the snapshot must be
   acknowledged by Kafka; then the ticker records go to the changelog, and once they are
   acknowledged, the partition record (the clock and last offset) follows them: a changelog
   that ends anywhere holds no clock newer than the tickers it covers, even when a failed batch
   had to be sent again. Once acknowledged, the records are applied to RocksDB with their
   changelog offset; only then are the batches' events acked, which lets faust commit their
   source offsets.
3. A partition without trades for ``WINDOW_IDLE_CLOSE_MS`` (while the broker was reachable and
   shows nothing unread for it) has its clock moved past its open windows; that clock is made
   durable by a checkpoint *before* those windows are emitted. A partition whose state was just
   loaded (a restart, a rebalance) counts as quiet from that moment: its input may have stopped
   before the worker came.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from itertools import islice
from typing import Any, TypeVar, cast

from faust.types import TP, AppT, EventT
from mode import Service

from tradestats.core.codec import WindowResult
from tradestats.core.partition import DeadLetter, EmitMode, PartitionState
from tradestats.service.kafka import partition_for_key
from tradestats.service.metrics import Metrics
from tradestats.service.output import (
    NO_HEADERS,
    Delivery,
    DeliveryError,
    Output,
    OutputRecord,
)
from tradestats.service.store import StateTable
from tradestats.service.transport import BatchingConsumer, RecordBatch
from tradestats.settings import Settings

__all__ = ["Pipeline"]

_T = TypeVar("_T")
log = logging.getLogger(__name__)

_TICK_SECONDS = 0.1
#: Results computed and queued between two turns of the event loop: a few ms of CPU.
_EMIT_SLICE = 500


class Pipeline(Service):
    """Owns the partition states of one worker and runs the checkpoint protocol."""

    def __init__(
        self,
        app: AppT,
        settings: Settings,
        table: StateTable,
        metrics: Metrics,
    ) -> None:
        super().__init__()
        self.app = app
        self.settings = settings
        self.table = table
        self.metrics = metrics
        self._spec = settings.window_spec
        self._states: dict[int, PartitionState] = {}
        self._pending_events: dict[int, list[EventT]] = {}
        self._in_flight: list[Delivery] = []  # results and dead letters not yet acknowledged
        self._last_trade: dict[int, float] = {}
        self._cluster_view: Hashable = None  # as the idle check last saw it
        self._idle_closing: dict[int, asyncio.Event] = {}
        # Per quiet partition: why its windows were last kept open, in which quiet spell (the
        # time of its last trade) and when that was logged.
        self._held_open: dict[int, tuple[str, float, float]] = {}
        self._priced: dict[int, set[str]] = {}  # tickers with a window_avg_price series
        self._checkpoint_lock = asyncio.Lock()
        # Held from a state change until what it emits is queued: a checkpoint's snapshot
        # never covers a result it does not wait for.
        self._emitting = asyncio.Lock()
        self._last_checkpoint = time.monotonic()
        self.output = Output(
            settings, [settings.stats_topic, settings.dlq_topic, table.changelog_topic_name]
        )
        self._recovered_generation: int | None = None
        #: Per partition, the first offset of the batch last refused for the records it would
        #: skip (see ``_skips_records``).
        self._refused_from: dict[int, int] = {}
        self._last_progress = time.monotonic()
        self._last_idle_check = 0.0
        # Since when the broker answered and the cluster view stayed the same (None: the
        # broker is unreachable); the idle count of a quiet partition starts no earlier.
        self._steady_since: float | None = time.monotonic()

    # --- lifecycle -----------------------------------------------------------------------

    async def on_start(self) -> None:
        await self.output.start()

    async def on_stop(self) -> None:
        await self.output.stop()

    @property
    def ready(self) -> bool:
        """Partitions assigned, state restored, not rebalancing."""
        return (
            self._recovered_generation is not None
            and self._recovered_generation == self.app.consumer_generation_id
            and not self.app.rebalancing
        )

    # --- processing ----------------------------------------------------------------------

    async def handle(self, event: EventT) -> None:
        """Fold one batch event into its partition's state and send what it produced."""
        partition = event.message.partition
        closing = self._idle_closing.get(partition)
        if closing is not None:
            await closing.wait()
        async with self._emitting:
            if event.message.generation_id != self.app.consumer_generation_id:
                # A rebalance happened since it was fetched: the assignment sought the
                # partition back to its committed offset, so its records come again (to
                # whoever owns it now). Processing it could write state this worker no
                # longer owns.
                log.info("partition %d: batch of an earlier generation dropped", partition)
                return
            state = self._states.get(partition) or await self._restore(partition)
            batch = event.value
            assert isinstance(batch, RecordBatch)
            if self._skips_records(partition, state.applied_offset, batch.first_offset):
                consumer = self.app.consumer
                assert isinstance(consumer, BatchingConsumer)
                await consumer.fetch_again(event.message.tp, state.applied_offset + 1)
                return
            outcome = state.process(batch.take())
            results = state.close_windows()
            self._pending_events.setdefault(partition, []).append(event)
            self._last_progress = time.monotonic()
            if outcome.aggregated or outcome.late:
                self._last_trade[partition] = time.monotonic()
            metrics = self.metrics
            metrics.trades_processed.inc(outcome.aggregated)
            if outcome.late:
                metrics.trades_late.inc(outcome.late)
            if outcome.replayed:
                metrics.records_replayed.inc(outcome.replayed)
            if outcome.dead_letters:
                self._send_dead_letters(partition, outcome.dead_letters)
            await self._send_results(partition, results)
        await self.output.wait_for_room()

    def _skips_records(self, partition: int, applied: int, first: int) -> bool:
        """Whether a batch from offset ``first`` must wait for the records after ``applied``.

        A batch that does not follow the last record processed means records in between were
        fetched and then dropped on their way here, with the client's position already past
        them: faust empties its stream queues when flow resumes at the end of a recovery, after
        it sought the partitions, so whatever was handed over during that seek is gone, and a
        batch fetched from the position before a rebalance can come after it. Folding such a
        batch in would make those records look replayed. It is refused and the partition read
        again from ``applied + 1``; if that read starts at ``first`` again, the broker has
        nothing in between (transaction markers, deleted records) and the batch is folded in.
        """
        if first <= applied + 1 or self._refused_from.get(partition) == first:
            self._refused_from.pop(partition, None)
            return False
        self._refused_from[partition] = first
        log.warning(
            "partition %d: a batch from offset %d after offset %d: reading again from %d",
            partition,
            first,
            applied,
            applied + 1,
        )
        return True

    async def _send_results(self, partition: int, results: Iterable[WindowResult]) -> None:
        """Queue the results as output records, :data:`_EMIT_SLICE` at a time, letting the
        event loop run after each slice. Its callers hold ``_emitting`` around it: the
        deliveries are in ``_in_flight`` before the lock goes, so the next checkpoint waits
        for them.

        One window close at thin densities is tens of thousands of results, hundreds of
        milliseconds of CPU: computed and queued in one go, the producer's answers waited
        that long to be read, and with them the next produce request (aiokafka keeps one in
        flight per broker), while the queue of unsent batches hit its bound (issue 11).
        """
        remaining = iter(results)
        while chunk := list(islice(remaining, _EMIT_SLICE)):
            self._queue_results(partition, chunk)
            await asyncio.sleep(0)

    def _queue_results(self, partition: int, results: Sequence[WindowResult]) -> None:
        """Queue the results and count them.

        Per result: one list append (a result is its output record and carries its output
        partition); the latency histogram is updated per window, the price gauges per ticker.
        """
        topic = self.settings.stats_topic
        lanes: list[list[OutputRecord]] = [[] for _ in range(self.output.partitions(topic))]
        latency = self.metrics.emit_latency
        now_ms = time.time() * 1000.0
        # A result's timestamp is its window's last ms: its window closed at timestamp + 1.
        group_stamp, group_size = results[0][2] if results else 0, 0
        for result in results:
            if result[2] != group_stamp:  # results come oldest window first: a few per batch
                latency.observe(max(0.0, (now_ms - group_stamp - 1) / 1000.0), group_size)
                group_stamp, group_size = result[2], 0
            group_size += 1
            lanes[result[4]].append(result)
        if group_size:
            latency.observe(max(0.0, (now_ms - group_stamp - 1) / 1000.0), group_size)
        for target, records in enumerate(lanes):
            if records:
                self._in_flight += self.output.send(topic, target, records)
        self._export_prices(partition, results)
        self.metrics.windows_emitted.inc(len(results))

    def _result_partition(self, key: bytes) -> int:
        """Kafka Streams partitions windowed output by the inner key only
        (WindowedStreamPartitioner): all of a ticker's windows land in one partition."""
        return partition_for_key(key, self.output.partitions(self.settings.stats_topic))

    def _export_prices(self, partition: int, results: Sequence[WindowResult]) -> None:
        """Average price per ticker as a gauge, for at most METRICS_PRICE_TICKERS tickers:
        one series per ticker would make /metrics megabytes long with 100k tickers. Set once
        per ticker and batch, to the newest window's value (results come oldest first)."""
        priced = self._priced.setdefault(partition, set())
        room = self.settings.metrics_price_tickers - sum(map(len, self._priced.values()))
        latest: dict[str, float] = {}
        for _, _, _, _, _, ticker, avg_price in results:
            if ticker not in priced:
                if room <= 0:
                    continue
                priced.add(ticker)
                room -= 1
            latest[ticker] = avg_price
        gauge = self.metrics.window_avg_price
        for ticker, price in latest.items():
            gauge.labels(ticker).set(price)

    def _send_dead_letters(self, partition: int, dead_letters: Sequence[DeadLetter]) -> None:
        source = self.settings.trades_topic
        records: list[OutputRecord] = []
        for dead in dead_letters:
            record = dead.record
            headers = [
                *(getattr(record, "headers", None) or ()),
                ("tradestats.reason", dead.reason.value.encode()),
                ("tradestats.error", dead.detail.encode()),
                ("tradestats.source.topic", source.encode()),
                ("tradestats.source.partition", str(partition).encode()),
                ("tradestats.source.offset", str(record.offset).encode()),
            ]
            timestamp = record.timestamp if record.timestamp >= 0 else None
            records.append((record.key, record.value, timestamp, headers))
            self.metrics.trades_dead_lettered.labels(dead.reason.value).inc()
        dlq = self.settings.dlq_topic
        self._in_flight += self.output.send(dlq, partition % self.output.partitions(dlq), records)
        log.warning(
            "partition %d: %d record(s) dead-lettered (%s)",
            partition,
            len(dead_letters),
            ", ".join(sorted({d.reason.value for d in dead_letters})),
            extra={"partition": partition, "offset": dead_letters[0].record.offset},
        )

    # --- checkpoints ---------------------------------------------------------------------

    async def checkpoint(self) -> None:
        """Make every state change so far durable, then ack the events it covers.

        A delivery that no retry can cure stops the worker (see :mod:`.output`).
        """
        try:
            await self._checkpoint()
        except DeliveryError as exc:
            log.error("stopping: %s", exc)
            await self.app.crash(exc)
            raise

    async def _checkpoint(self) -> None:
        async with self._checkpoint_lock:
            started = time.monotonic()
            self._last_checkpoint = started
            async with self._emitting:  # state, the events it covers, the results before it
                plans = []
                for partition, state in self._states.items():
                    checkpoint = state.checkpoint()
                    events = self._pending_events.pop(partition, [])
                    if checkpoint.writes or checkpoint.updates or events:
                        plans.append((partition, checkpoint, events))
                if self.settings.emit_mode is EmitMode.UPDATE:
                    for partition, checkpoint, _ in plans:
                        await self._send_results(partition, checkpoint.updates)
                sent, self._in_flight = self._in_flight, []
            if not plans and not sent:
                return
            await self.output.settle(sent)
            changelog = self.table.changelog_topic_name
            written = [(partition, c.writes) for partition, c, _ in plans if c.writes]
            # The ticker records, then (once they are durable) each partition's record.
            await self._write_changelog([(partition, writes[:-1]) for partition, writes in written])
            ends = await self._write_changelog([(p, writes[-1:]) for p, writes in written])
            for partition, writes in written:
                self.table.store.apply_checkpoint(writes, TP(changelog, partition), ends[partition])
                self.metrics.changelog_records.inc(len(writes))
            for _, _, events in plans:
                for event in events:
                    event.ack()
            if any(events for _, _, events in plans):
                # Commit now rather than at faust's next commit tick: a restart replays less,
                # and the committed offsets follow the durable state closely.
                await self.app.consumer.commit()
            elapsed = time.monotonic() - started
            self.metrics.checkpoint_seconds.observe(elapsed)
            log.debug(
                "checkpoint: %d result batches acknowledged, %d state records, %d batches acked,"
                " %.1f ms",
                len(sent),
                sum(len(writes) for _, writes in written),
                sum(len(events) for _, _, events in plans),
                elapsed * 1000,
            )

    async def _write_changelog(
        self, parts: Sequence[tuple[int, Sequence[tuple[bytes, bytes | None]]]]
    ) -> dict[int, int]:
        """Send state records per partition; returns each partition's last changelog offset
        once all of them are acknowledged."""
        changelog = self.table.changelog_topic_name
        deliveries = [
            delivery
            for partition, writes in parts
            if writes
            for delivery in self.output.send(
                changelog, partition, [(key, value, None, NO_HEADERS) for key, value in writes]
            )
        ]
        await self.output.settle(deliveries)
        ends: dict[int, int] = {}
        for delivery in deliveries:
            ends[delivery.partition] = max(ends.get(delivery.partition, -1), delivery.last_offset)
        return ends

    @Service.timer(_TICK_SECONDS)
    async def _tick(self) -> None:
        urgent = self.app.rebalancing or self.app.should_stop
        now = time.monotonic()
        due = now - self._last_checkpoint >= self.settings.commit_interval_ms / 1000.0
        if (urgent or due) and self._has_pending_work():
            await self.checkpoint()
        if not urgent:
            await self._close_idle_partitions(now)

    def _has_pending_work(self) -> bool:
        return (
            bool(self._in_flight)
            or any(self._pending_events.values())
            or any(state.has_pending_changes for state in self._states.values())
        )

    async def _close_idle_partitions(self, now: float) -> None:
        """Close the open windows of partitions whose input stopped.

        No trade for ``WINDOW_IDLE_CLOSE_MS`` is not enough: during a broker outage nothing
        arrives either, while producers buffer what they keep writing. A partition is idle when
        it got no trade for that long *while the broker was reachable and the cluster steady*,
        and the broker confirms there is nothing left to read in it. After an outage, and
        after the brokers, a quiet partition's leader or its in-sync replicas changed (a
        bounce: producers writing with acks=all wait until the leader moves or the in-sync
        set shrinks), the count starts again, which gives producers time to deliver their
        buffers.
        """
        if now - self._last_idle_check < 1.0:
            return
        self._last_idle_check = now
        idle_after = self.settings.window_idle_close_ms / 1000.0
        quiet = {  # partition -> when it last got a trade
            partition: last
            for partition, last in self._last_trade.items()
            if now - last >= idle_after and partition in self._states
        }
        consumer = self.app.consumer
        assert isinstance(consumer, BatchingConsumer)
        topic = self.settings.trades_topic
        held = [TP(topic, p) for p in sorted(self._states)]
        if not quiet:  # only note what the consumer's metadata says, without asking
            with contextlib.suppress(Exception):  # no consumer (starting, stopping)
                self._note_cluster(await consumer.cluster_view(held, refresh=False), now)
            return
        try:
            view = await asyncio.wait_for(consumer.cluster_view(held, refresh=True), timeout=2.0)
            ends = await asyncio.wait_for(
                consumer.highwaters(*(TP(topic, p) for p in quiet)), timeout=2.0
            )
        except Exception as exc:  # the broker is unreachable: the input did not stop
            if self._steady_since is not None:
                log.info("cannot reach the broker (%r): open windows stay open", exc)
            self._steady_since = None
            return
        if self._steady_since is None:
            self._steady_since = now
        self._note_cluster(view, now)
        if now - self._steady_since < idle_after:
            for partition, last in quiet.items():
                self._hold_open(partition, last, now, "the cluster changed recently")
            return
        for partition, last in quiet.items():
            end = ends.get(TP(topic, partition))
            done = self._idle_closing[partition] = asyncio.Event()
            try:
                async with self._emitting:
                    # Decided under the lock that folds batches: trades that came while the
                    # broker was asked (input resuming after a lull) keep the windows open.
                    state = self._states.get(partition)
                    if state is None or self._last_trade.get(partition) != last:
                        continue
                    if end is None or end > state.applied_offset + 1:
                        self._hold_open(
                            partition,
                            last,
                            now,
                            "input not read yet",
                            f" (end offset {end}, last offset processed {state.applied_offset})",
                        )
                        continue
                    del self._last_trade[partition]
                    self._held_open.pop(partition, None)
                    moved = state.close_idle()
                if moved:
                    log.info(
                        "partition %d idle: closing its open windows",
                        partition,
                        extra={"partition": partition},
                    )
                    await self.checkpoint()  # the moved clock is durable before any result
                    async with self._emitting:
                        await self._send_results(partition, state.close_windows())
            finally:
                del self._idle_closing[partition]
                done.set()

    def _hold_open(
        self, partition: int, last: float, now: float, reason: str, detail: str = ""
    ) -> None:
        """Say why a quiet partition's windows stay open: once per quiet spell and reason,
        then every 30 s while it lasts (windows that never close are otherwise a mystery)."""
        held = self._held_open.get(partition)
        if held is not None and held[:2] == (reason, last) and now - held[2] < 30.0:
            return
        self._held_open[partition] = (reason, last, now)
        log.info(
            "partition %d quiet for %.0f s, its windows stay open: %s%s",
            partition,
            now - last,
            reason,
            detail,
            extra={"partition": partition},
        )

    def _note_cluster(self, view: Hashable, now: float) -> None:
        """Restart the idle counts if brokers, leaders or in-sync replicas changed."""
        if view != self._cluster_view:
            if self._cluster_view is not None:
                if self._steady_since is not None:  # else it starts when the broker answers
                    self._steady_since = now
                log.info("brokers, leaders or in-sync replicas changed: idle counts restarted")
            self._cluster_view = view

    # --- assignment ----------------------------------------------------------------------

    async def on_recovered(self, changelog_partitions: set[int]) -> None:
        """Table recovery finished: keep the states of kept partitions, load the new ones.

        The active partitions are the *input* partitions assigned (their changelog partitions
        are assigned with them; should they ever differ, the input decides, loudly).
        """
        topic = self.settings.trades_topic
        partitions = {
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic
        }
        if partitions != changelog_partitions:
            log.warning(
                "input partitions %s assigned with changelog partitions %s",
                sorted(partitions),
                sorted(changelog_partitions),
            )
        for partition in set(self._states) - partitions:
            del self._states[partition]
            self._last_trade.pop(partition, None)
            self._held_open.pop(partition, None)
            self._pending_events.pop(partition, None)
            for ticker in self._priced.pop(partition, ()):
                self.metrics.window_avg_price.remove(ticker)
        for partition in sorted(partitions - set(self._states)):
            async with self._emitting:
                state = await self._restore(partition)
                # closed before the crash, maybe never emitted
                await self._send_results(partition, state.close_windows())
        self._recovered_generation = self.app.consumer_generation_id
        self.metrics.rebalances.inc()
        log.info("ready: input partitions %s", sorted(partitions))

    async def _restore(self, partition: int) -> PartitionState:
        """Load a partition's state from RocksDB, off the event loop: a million aggregates take
        seconds, and /health and /ready must keep answering meanwhile."""
        started = time.monotonic()
        state = await asyncio.to_thread(
            _without_cyclic_gc,
            lambda: PartitionState.restore(
                self.table.store.partition_items(partition),
                self._spec,
                self.settings.emit_mode,
                self.settings.window_retention_ms,
                self._result_partition,
            ),
        )
        self._states[partition] = state
        self._last_trade[partition] = time.monotonic()  # quiet from now on, unless trades come
        self.metrics.restored_partitions.inc()
        log.info(
            "partition %d: state loaded in %.3f s (stream time %d, last offset %d)",
            partition,
            time.monotonic() - started,
            state.stream_time,
            state.applied_offset,
            extra={"partition": partition, "offset": state.applied_offset},
        )
        return state

    # --- queries -------------------------------------------------------------------------

    def partition_state(self, partition: int) -> PartitionState | None:
        return self._states.get(partition)

    def active_partitions(self) -> list[int]:
        return sorted(self._states)

    def open_windows(self) -> int:
        return sum(state.open_window_count() for state in self._states.values())

    def consumer_lag(self) -> dict[int, int]:
        """Records after the last one processed, per active input partition the consumer
        holds right now (in a rebalance, partitions are revoked before the states go)."""
        consumer = self.app.consumer
        try:
            assigned = consumer.assignment()
        except Exception:  # no consumer yet (starting) or none any more (stopping)
            return {}
        lag = {}
        for partition, state in list(self._states.items()):
            tp = TP(self.settings.trades_topic, partition)
            highwater = consumer.highwater(tp) if tp in assigned else None
            if highwater is not None:
                lag[partition] = max(0, highwater - state.applied_offset - 1)
        return lag

    def recovery_remaining(self) -> int:
        """Changelog records faust still has to replay for the active partitions."""
        return int(self._recovery.active_remaining_total())

    def standby_remaining(self) -> int:
        """Changelog records the standby copies on this worker are behind."""
        return int(self._recovery.standby_remaining_total())

    @property
    def _recovery(self) -> Any:
        return cast(Any, self.app.tables).recovery

    def stalled_for(self) -> float:
        """Seconds without progress while input is waiting (0 when idle or keeping up)."""
        if not self.ready or not any(self.consumer_lag().values()):
            return 0.0
        return time.monotonic() - self._last_progress


def _without_cyclic_gc(load: Callable[[], _T]) -> _T:
    """Run ``load`` with Python's cyclic garbage collector paused, then freeze what it built.

    Loading state allocates millions of long-lived objects, and the collector traversed them
    again and again: half of the load time. Frozen, later collections skip them too; objects
    are still freed by reference counting (state holds no reference cycles).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return load()
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
