"""Kafka Streams restoring the same state, cold and warm, beside tradestats.

The talk's own system is the yardstick: its topology (``bench/kstreams``, the main benchmark's
contender (d)) reads the trades a state run produced, so its window store holds the same trades,
in its own shape: a 5 s window per ticker and 1 s step, each window one record, where tradestats
keeps one aggregate per 1 s pane. Its changelog gets the segment settings tradestats' changelog
has, so the log cleaner treats both alike. Then it is stopped and started again on an emptied
state directory (cold: everything comes back from its changelog) and on the intact one (warm).

It runs as tradestats' workers do here: static membership (a restarted instance gets its
partitions back at once instead of waiting for its old session to expire) and the same session
timeout. Its window store's changelog is compacted *and* time-retained (window retention plus
``windowstore.changelog.additional.retention.ms``, a day by default); the trades carry fixed
timestamps from 2023, so the extra retention is raised to ten years or the broker would delete
the changelog from under the measurement.

Kafka Streams reports its restores through a restore listener (``RestoreEvents.java``): the
instance is ready when it is ``RUNNING`` and every changelog partition it began restoring has
finished; a cold start also waits for every partition that holds changelog records to have
reported its restore, so a ``RUNNING`` reported before a restore began cannot end it early.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path

from bench.contenders.base import RunSpec
from bench.contenders.kstreams import KafkaStreams
from bench.process import ContenderProcess
from bench.progress import Progress
from bench.recovery.broker import BrokerHandle, changelog_disk_bytes, settle_cleaner
from bench.recovery.kafka import (
    GroupLag,
    count_records,
    create_topic,
    delete_topics,
    end_offsets,
)
from bench.recovery.plan import DEFAULT_SEGMENT_BYTES, Plan
from bench.recovery.results import KStreamsRestart, KStreamsResult

__all__ = ["STORE", "KStreamsRun", "measure_kstreams"]

#: The window store's name in the topology; its changelog is ``<app id>-<store>-changelog``.
STORE = "trade-aggregates"
#: tradestats' own changelog settings besides segment.bytes (tradestats/service/app.py).
_CLEANER_CONFIGS = {"segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"}
#: Ten years: longer than the trades' age (see the module docstring).
_ADDITIONAL_RETENTION_MS = 10 * 365 * 24 * 3600 * 1000
_RESTORE_END = re.compile(r"^restore-end:(\d+):(\d+)$")
_POLL_SECONDS = 0.05


class KStreamsRun:
    """One Kafka Streams instance on one state run's trades: built once, then restarted."""

    def __init__(
        self,
        broker: BrokerHandle,
        plan: Plan,
        trades_topic: str,
        app_id: str,
        segment_bytes: int,
        root: Path,
        progress: Progress,
        label: str,
    ) -> None:
        self.broker = broker
        self.plan = plan
        self.progress = progress
        self.label = f"{label}: Kafka Streams"
        self.contender = KafkaStreams()
        self.contender.commit_interval = plan.commit_interval_ms / 1000
        self.spec = RunSpec(
            bootstrap=broker.bootstrap,
            input_topic=trades_topic,
            output_topic=f"{app_id}-out",
            app_id=app_id,
            work_dir=root,
            partitions=plan.partitions,
            web_port=0,
        )
        self.changelog = f"{app_id}-{STORE}-changelog"
        configs = {
            **{f"topic.{k}": v for k, v in _CLEANER_CONFIGS.items()},
            "topic.segment.bytes": str(segment_bytes),
            "windowstore.changelog.additional.retention.ms": str(_ADDITIONAL_RETENTION_MS),
            "group.instance.id": f"{app_id}-0",
            "session.timeout.ms": str(plan.session_timeout_ms),
        }
        self.extra_args = [arg for k, v in configs.items() for arg in (f"--streams.{k}", v)]
        self.root = root
        self._restorable: set[str] = set()
        """Changelog partitions holding records (a cold start restores each of them)."""
        self._process: ContenderProcess | None = None

    def prepare(self, cache_dir: Path) -> None:
        """Build the jar (once; cached by the sources' hash)."""
        self.contender.prepare(cache_dir, self.progress.say)

    async def build(self) -> KStreamsResult:
        """Process every trade once and checkpoint; then let the log cleaner settle."""
        # The dev broker creates no topics on demand; Kafka Streams creates its changelog.
        await create_topic(self.broker.bootstrap, self.spec.output_topic, self.plan.partitions)
        started = time.monotonic()
        process = self._start()
        async with GroupLag(
            self.broker.bootstrap, self.spec.app_id, self.spec.input_topic, self.plan.partitions
        ) as lag:
            deadline = started + self.plan.ready_timeout
            while (left := await lag.lag()) > 0:
                if not process.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.label} did not finish:\n{process.log_tail()}")
                self.progress.status(f"{self.label}: {left:,} trades to go")
                await asyncio.sleep(0.5)
        build_seconds = time.monotonic() - started
        self._stop()
        cleaner_wait = await settle_cleaner(
            self.broker.log_dir,
            self.changelog,
            self.plan.partitions,
            self.plan.cleaner_stable_polls,
            self.progress,
        )
        per_partition, live_keys = await count_records(
            self.broker.bootstrap, self.changelog, self.plan.partitions
        )
        self._restorable = {str(p) for p, n in per_partition.items() if n}
        records = sum(per_partition.values())
        ends = await end_offsets(self.broker.bootstrap, self.changelog, self.plan.partitions)
        self.progress.say(
            f"{self.label}: built in {build_seconds:.1f} s; changelog {records:,} of "
            f"{sum(ends.values()):,} records after compaction, {live_keys:,} windows live"
        )
        return KStreamsResult(
            build_seconds=build_seconds,
            changelog_offsets=sum(ends.values()),
            changelog_records=records,
            live_keys=live_keys,
            changelog_disk_bytes=changelog_disk_bytes(
                self.broker.log_dir, self.changelog, self.plan.partitions
            ),
            cleaner_wait_seconds=cleaner_wait,
        )

    def restarts(self) -> list[KStreamsRestart]:
        """Cold and warm restarts, ``plan.repeat`` times each, interleaved (blocking, as the
        tradestats restarts are)."""
        return [self._restart(kind) for _ in range(self.plan.repeat) for kind in ("cold", "warm")]

    def _restart(self, kind: str) -> KStreamsRestart:
        if kind == "cold":
            shutil.rmtree(self.spec.work_dir / "state", ignore_errors=True)
        process = self._start()
        must_restore = self._restorable if kind == "cold" else set()
        deadline = time.monotonic() + self.plan.ready_timeout
        while True:
            events = process.events()
            started = {n.split(":")[1] for n in events if n.startswith("restore-start:")}
            ended = {m.group(1): int(m.group(2)) for n in events if (m := _RESTORE_END.match(n))}
            if "running" in events and started | must_restore <= set(ended):
                break
            if not process.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} {kind}: not ready:\n{process.log_tail()}")
            self.progress.status(
                f"{self.label} {kind}: {len(ended)}/{len(started)} partitions restored"
            )
            time.sleep(_POLL_SECONDS)
        ready_ms = max(events["running"], *(events[n] for n in events if _RESTORE_END.match(n)))
        first_start = min((events[n] for n in events if n.startswith("restore-start:")), default=0)
        last_end = max((events[n] for n in events if _RESTORE_END.match(n)), default=0)
        self._stop()
        restart = KStreamsRestart(
            kind=kind,
            seconds_to_ready=ready_ms / 1000 - process.started_at,
            records_restored=sum(ended.values()),
            restore_seconds=(last_end - first_start) / 1000 if started else None,
        )
        self.progress.say(
            f"{self.label} {kind}: ready in {restart.seconds_to_ready:.2f} s, "
            f"{restart.records_restored:,} changelog records restored"
        )
        return restart

    def _start(self) -> ContenderProcess:
        launch = self.contender.launch(self.spec)
        launch = type(launch)([*launch.argv, *self.extra_args], launch.env, launch.cwd)
        runs = len(list(self.root.glob("kstreams-*.log")))
        process = ContenderProcess(
            "kafka-streams",
            launch,
            self.root / f"kstreams-{runs}.log",
            self.root / f"kstreams-{runs}.events",
        )
        self._process = process.start()
        return process

    def _stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    async def close(self, keep: bool = False) -> None:
        """Stop it if running; unless ``keep``, drop its topics and state (logs stay)."""
        self._stop()
        if not keep:
            await delete_topics(self.broker.bootstrap, [self.changelog, self.spec.output_topic])
            shutil.rmtree(self.spec.work_dir / "state", ignore_errors=True)


async def measure_kstreams(
    broker: BrokerHandle,
    plan: Plan,
    trades_topic: str,
    app_id: str,
    root: Path,
    cache_dir: Path,
    progress: Progress,
    label: str,
    keep: bool = False,
) -> KStreamsResult:
    """Kafka Streams on ``trades_topic``: its state built, then restarted cold and warm."""
    run = KStreamsRun(
        broker, plan, trades_topic, app_id, DEFAULT_SEGMENT_BYTES, root, progress, label
    )
    run.prepare(cache_dir)
    try:
        result = await run.build()
        result.restarts = run.restarts()
    finally:
        await run.close(keep)
    return result
