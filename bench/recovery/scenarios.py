"""One state of a chosen size, built by a real worker, and the restarts measured on it.

Building: worker ``tradestats-0`` runs alone; trades are produced one 1 s pane at a time (one
trade per ticker per pane) and the next pane waits until the worker has committed the previous
one, i.e. checkpointed it to the changelog. Every ticker record is therefore rewritten once per
pane: the changelog holds ``panes`` versions of each key (compaction has something to do) and
the final state is tickers x panes aggregates, all live (stream time ends inside the last pane;
nothing has expired, and WINDOW_IDLE_CLOSE_MS is set to an hour so nothing is closed away).

Measuring, on the idle state: warm restarts (SIGTERM, SIGKILL), a cold restart (volume wiped),
then a second worker joins with a standby replica and the first one is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from bench.progress import Progress
from bench.recovery.broker import BrokerHandle, changelog_disk_bytes, settle_cleaner
from bench.recovery.kafka import (
    ChangelogScan,
    GroupLag,
    TradeWriter,
    create_topic,
    delete_topics,
    end_offsets,
    scan_changelog,
    topic_config,
)
from bench.recovery.plan import Plan, format_count
from bench.recovery.pods import (
    ASSIGNED,
    STANDBY_RESTORED,
    LogEvents,
    Prober,
    active_restored,
    metric,
    phases_of_start,
    start_timed,
    wait_ready,
)
from bench.recovery.results import KINDS, Restart, StateInfo, Takeover
from tests.integration.harness import Topics, worker_env
from tests.scenarios.statefulset import StatefulSet

__all__ = ["StateRun"]

#: Long enough that no partition is ever idle-closed during a run.
_IDLE_CLOSE_MS = 3_600_000
_POLL_SECONDS = 0.25
#: faust's default ``standby_buffer_size`` (= ``recovery_buffer_size``), records per table.
_FAUST_STANDBY_BUFFER = 1000
#: The standby counter unchanged this long = the standby copy is complete (the state is idle).
_STANDBY_STABLE_SECONDS = 3.0


class StateRun:
    """Topics, pods and measurements for one (state size, segment size)."""

    def __init__(
        self,
        broker: BrokerHandle,
        plan: Plan,
        target: int,
        segment_bytes: int,
        root: Path,
        progress: Progress,
    ) -> None:
        self.broker = broker
        self.plan = plan
        self.target = target
        self.tickers = plan.tickers(target)
        self.segment_bytes = segment_bytes
        self.progress = progress
        self.label = f"{format_count(target)} aggregates"
        self.topics = Topics.unique(f"rec{format_count(target).lower()}")
        self.changelog = f"{self.topics.app_id}-trade-state-changelog"
        env = worker_env(
            broker.bootstrap,
            self.topics,
            plan.partitions,
            commit_interval_ms=plan.commit_interval_ms,
            window_idle_close_ms=_IDLE_CLOSE_MS,
            kafka_session_timeout_ms=plan.session_timeout_ms,
            standby_replicas=1,
            changelog_segment_bytes=segment_bytes,
        )
        root.mkdir(parents=True, exist_ok=True)
        self.sts = StatefulSet(root, env, plan.partitions)
        self.scan = ChangelogScan()

    # --- building the state --------------------------------------------------------------

    async def build(self) -> StateInfo:
        plan, progress = self.plan, self.progress
        bootstrap = self.broker.bootstrap
        await create_topic(bootstrap, self.topics.trades, plan.partitions)
        self.sts.start(0)
        self._wait_ready(0, "first start")
        started = time.monotonic()
        trades = 0
        async with (
            TradeWriter(bootstrap, self.topics.trades, plan.partitions, self.tickers) as writer,
            GroupLag(bootstrap, self.topics.app_id, self.topics.trades, plan.partitions) as lag,
        ):
            for pane in range(plan.panes):
                trades += await writer.write_pane(pane)
                while (left := await lag.lag()) > 0:
                    self.sts.check_alive()
                    progress.status(
                        f"{self.label}: pane {pane + 1}/{plan.panes}, "
                        f"{trades - left:,}/{trades:,} trades checkpointed"
                    )
                    await asyncio.sleep(_POLL_SECONDS)
        build_seconds = time.monotonic() - started
        progress.say(
            f"{self.label}: {trades:,} trades for {self.tickers:,} tickers x {plan.panes} panes "
            f"checkpointed in {build_seconds:.1f} s"
        )
        metrics_started = time.monotonic()
        status, text = self.sts.pod(0).get("/metrics", timeout=60)
        metrics_seconds = time.monotonic() - metrics_started
        segment = await topic_config(bootstrap, self.changelog, "segment.bytes")
        cleaner_wait = await settle_cleaner(
            self.broker.log_dir,
            self.changelog,
            plan.partitions,
            plan.cleaner_stable_polls,
            progress,
        )
        progress.status(f"{self.label}: reading the changelog to verify the state")
        self.scan = await scan_changelog(bootstrap, self.changelog, plan.partitions)
        ends = await end_offsets(bootstrap, self.changelog, plan.partitions)
        state = StateInfo(
            target_aggregates=self.target,
            tickers=self.tickers,
            panes=plan.panes,
            partitions=plan.partitions,
            segment_bytes=int(segment) if segment else self.segment_bytes,
            trades=trades,
            build_seconds=build_seconds,
            aggregates=self.scan.total_aggregates,
            live_keys=self.scan.total_live_keys,
            changelog_offsets=sum(ends.values()),
            changelog_records=self.scan.total_records,
            changelog_disk_bytes=changelog_disk_bytes(
                self.broker.log_dir, self.changelog, plan.partitions
            ),
            cleaner_wait_seconds=cleaner_wait,
            records_per_partition=dict(self.scan.records),
            keys_per_partition=dict(self.scan.live_keys),
            metrics_bytes=len(str(text)) if status == 200 else 0,
            metrics_seconds=metrics_seconds,
        )
        progress.say(
            f"{self.label}: state verified in the changelog: {state.aggregates:,} aggregates in "
            f"{state.live_keys:,} keys; {state.changelog_records:,} of "
            f"{state.changelog_offsets:,} records left after compaction "
            f"(segment.bytes={state.segment_bytes:,})"
        )
        return state

    # --- restarts ------------------------------------------------------------------------

    def restarts(self, kinds: tuple[str, ...] = KINDS) -> list[Restart]:
        """Each kind ``plan.repeat`` times, interleaved, on worker tradestats-0.

        Blocking on purpose (here and in :meth:`takeover`): nothing else runs meanwhile, and a
        Ctrl-C interrupts a blocking wait at once, where a thread would keep polling.
        """
        return [self._restart(kind, round_) for round_ in range(self.plan.repeat) for kind in kinds]

    def _restart(self, kind: str, round_: int) -> Restart:
        sts = self.sts
        if kind == "warm-sigkill":
            sts.kill(0)
        else:
            sts.stop(0)
        if kind == "cold":
            sts.wipe(0)
        label = f"{self.label}: {kind}" + (f" #{round_ + 1}" if self.plan.repeat > 1 else "")
        timing = start_timed(
            sts, 0, timeout=self.plan.ready_timeout, progress=self.progress, label=label
        )
        replayed = active_restored(sts.pod(0))
        self.progress.say(
            f"{label}: ready in {timing.seconds:.2f} s, {replayed:,} changelog records replayed"
        )
        return Restart(
            kind,
            timing.seconds,
            replayed,
            timing.offsets_replayed,
            timing.phases,
            timing.slowest_answer,
        )

    # --- standby takeover ----------------------------------------------------------------

    def takeover(self) -> Takeover:
        sts, plan, progress = self.sts, self.plan, self.progress
        survivor, victim = sts.pod(1), 0
        survivor_started = time.time()
        sts.start(1)
        assignment = sts.wait_settled(timeout=plan.ready_timeout)
        taken = sorted(assignment[victim])
        warm_copy = sum(self.scan.live_keys.get(p, 0) for p in taken)
        standby_records, copied = self._wait_standby_caught_up(warm_copy)
        first_assigned = LogEvents(sts.log_since_start(1)).first(ASSIGNED, survivor_started)
        before = active_restored(survivor)
        recoveries_before = len(sts.recoveries(1))
        progress.say(
            f"{self.label}: tradestats-1 holds standby copies of {sts.standbys(1)} "
            f"({standby_records:,} records applied); SIGKILL tradestats-0 (owner of {taken})"
        )
        killed_wall, killed = time.time(), time.monotonic()
        sts.kill(victim)
        detected = None
        deadline = killed + plan.session_timeout_ms / 1000 + plan.ready_timeout
        prober = Prober(survivor)
        prober.get()  # the web server is up: every answer from now on counts
        while True:
            status, body = prober.get()
            now = time.monotonic()
            if status != 200 and detected is None:
                detected = now
            if status == 200 and len(body.get("partitions", [])) == plan.partitions:
                break
            if now > deadline:
                raise RuntimeError(f"takeover not complete:\n{sts.log_tails()}")
            progress.status(
                f"{self.label}: standby takeover: tradestats-1 {body.get('reason', 'ready')}"
            )
            time.sleep(0.05)
        ready_wall, ready = time.time(), time.monotonic()
        events = LogEvents(sts.log_since_start(1))
        assigned = events.first(ASSIGNED, killed_wall)
        replayed = active_restored(survivor) - before
        recovery = next(
            (r for r in sts.recoveries(1)[recoveries_before:] if set(taken) <= r.partitions), None
        )
        result = Takeover(
            partitions=taken,
            detection_seconds=None if detected is None else detected - killed,
            assigned_seconds=None if assigned is None else assigned - killed_wall,
            restore_seconds=None if assigned is None else ready_wall - assigned,
            total_seconds=ready - killed,
            records_replayed=replayed,
            offsets_replayed=None if recovery is None else sum(recovery.replayed(p) for p in taken),
            standby_records=standby_records,
            standby_catchup_seconds=None if first_assigned is None else copied - first_assigned,
            full_restore_records=sum(self.scan.records.get(p, 0) for p in taken),
            rebalances=events.count(ASSIGNED, killed_wall, ready_wall),
            phases=phases_of_start(events, killed_wall, ready_wall),
            slowest_answer_seconds=prober.slowest,
        )
        progress.say(
            f"{self.label}: standby takeover: detected after {_seconds(result.detection_seconds)}, "
            f"assigned after {_seconds(result.assigned_seconds)}, ready "
            f"{_seconds(result.restore_seconds)} later; {replayed:,} records replayed "
            f"(a full restore: {result.full_restore_records:,})"
        )
        return result

    def _wait_standby_caught_up(self, live_keys: int) -> tuple[int, float]:
        """Until the survivor's standby replay has (nearly) covered the victim's partitions and
        stopped; returns the standby records it applied and the wall time it got there.

        A complete copy took at least one record per live key, but faust applies standby
        records to RocksDB in batches of its standby buffer (1000 records per table), flushing
        the rest only at the next rebalance; so the counter can stop up to that much short.
        "Stopped" is the counter unchanged for 3 s (the state is idle); "got there" is the
        first poll that saw its final value (polls 0.25 s apart).
        """
        survivor = self.sts.pod(1)
        deadline = time.monotonic() + self.plan.ready_timeout
        last, reached, stable_since = -1, time.time(), time.monotonic()
        while time.monotonic() < deadline:
            applied = int(metric(survivor, STANDBY_RESTORED))
            if applied != last:
                last, reached, stable_since = applied, time.time(), time.monotonic()
            elif (
                applied >= live_keys - _FAUST_STANDBY_BUFFER
                and time.monotonic() - stable_since >= _STANDBY_STABLE_SECONDS
            ):
                return applied, reached
            self.progress.status(
                f"{self.label}: standby copy on tradestats-1: {applied:,} records applied"
            )
            time.sleep(_POLL_SECONDS)
        raise RuntimeError(f"standby never caught up:\n{self.sts.log_tails()}")

    # --- helpers -------------------------------------------------------------------------

    def _wait_ready(self, i: int, what: str) -> None:
        wait_ready(
            self.sts.pod(i),
            timeout=self.plan.ready_timeout,
            progress=self.progress,
            label=f"{self.label}: {what}",
        )

    def stop_workers(self) -> None:
        """Stop the pods, keeping the topics (Kafka Streams reads the same trades next)."""
        self.sts.close()

    async def close(self, keep: bool = False) -> None:
        """Stop the pods; unless ``keep``, drop the topics and the pods' data (logs stay)."""
        self.sts.close()
        if keep:
            return
        topics = self.topics
        await delete_topics(
            self.broker.bootstrap, [topics.trades, topics.stats, topics.dlq, self.changelog]
        )
        for pod in self.sts.pods:
            shutil.rmtree(pod.data_dir, ignore_errors=True)


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} s"
