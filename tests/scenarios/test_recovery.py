"""Scenarios 2-4: what a pod replays from the changelog after it dies, and that it stays exact.

The signal is the recovery report faust logs after every assignment (parsed by
:class:`tests.scenarios.statefulset.Recovery`): per active changelog partition, the high-water
mark and the offset the local RocksDB database already holds; faust reads everything between.

Why the warm bound is tight: a checkpoint sends at most one changelog record per ticker of the
partition plus the partition's clock record, and the pipeline applies them to RocksDB (with
their offset) as soon as they are acknowledged, under a lock, before the next checkpoint starts.
So a pod killed at any moment has at most one checkpoint's records in the changelog but not in
its database: ``replayed <= tickers of the partition + 1``, whatever the state size.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.conftest import Broker
from tests.integration.harness import Topics, create_topics
from tests.oracle import Record
from tests.scenarios.load import SteadyLoad, expect_exact_windows, trade_source
from tests.scenarios.statefulset import Recovery, StatefulSet, pod_env

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]

PARTITIONS = 6
RATE = 1500
RESTORED = "tradestats_changelog_records_restored_total"
StatefulSetFactory = Callable[[dict[str, str], int], StatefulSet]


def changelog(topics: Topics) -> str:
    return f"{topics.app_id}-trade-state-changelog"


async def earliest_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {
            tp.partition: offset for tp, offset in (await consumer.beginning_offsets(tps)).items()
        }
    finally:
        await consumer.stop()


def tickers_per_partition(records: list[Record]) -> dict[int, int]:
    keys: dict[int, set[bytes | None]] = {p: set() for p in range(PARTITIONS)}
    for record in records:
        keys[record.partition].add(record.key)
    return {p: len(k) for p, k in keys.items()}


def assert_warm(restart: Restart, records: list[Record]) -> None:
    """Local state found for every partition, and only the last checkpoint's tail replayed."""
    recovery = restart.recovery
    tickers = tickers_per_partition(records)
    bound = sum(tickers[p] + 1 for p in recovery.partitions)
    assert restart.restored <= bound, f"applied {restart.restored} changelog records"
    for p in sorted(recovery.partitions):
        if recovery.highwater[p] < 0:
            continue  # nothing was ever written for this partition
        assert recovery.start[p] >= 0, f"partition {p}: no local state ({recovery})"
        assert recovery.replayed(p) <= tickers[p] + 1, (
            f"partition {p}: replayed {recovery.replayed(p)} changelog records, more than one "
            f"checkpoint ({tickers[p]} tickers + 1): {recovery}"
        )


async def start_pods(
    kafka: Broker, statefulset: StatefulSetFactory, label: str, replicas: int, **env: object
) -> tuple[Topics, StatefulSet]:
    topics = Topics.unique(label)
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    sts = statefulset(pod_env(kafka.bootstrap_servers, topics, PARTITIONS, **env), PARTITIONS)
    sts.scale_to(replicas)
    sts.wait_settled()
    return topics, sts


def restored(sts: StatefulSet, pod: int, role: str = "active") -> float:
    """Changelog records the pod's process has applied to its store (its own counter)."""
    return sts.pod(pod).metrics()[f'{RESTORED}{{role="{role}"}}']


@dataclass(frozen=True)
class Restart:
    recovery: Recovery  # what faust's report says it replayed
    restored: float  # what the pod's counter says it applied, once ready
    seconds: float  # from process start to ready


async def kill_and_restart(
    sts: StatefulSet, pod: int, load: SteadyLoad, *, wipe: bool = False
) -> Restart:
    """SIGKILL ``pod`` under load, restart it (on an emptied volume if ``wipe``)."""
    before = sts.assignment().get(pod)
    sts.kill(pod)
    if wipe:
        sts.wipe(pod)
    sts.start(pod)
    seconds = (await asyncio.to_thread(sts.wait_ready, [pod]))[pod]
    restart = Restart(sts.recoveries(pod)[0], restored(sts, pod), seconds)
    await asyncio.to_thread(sts.wait_settled)
    recovery = restart.recovery
    print(
        f"tradestats-{pod} {'cold' if wipe else 'warm'}: ready in {seconds:.1f} s, had "
        f"{before}, recovered {sorted(recovery.partitions)}, replayed "
        f"{recovery.total_replayed} changelog offsets, {restart.restored:.0f} records "
        f"applied: {recovery}"
    )
    assert load.sent > 0
    return restart


async def test_sigkill_and_restart_on_the_intact_volume_replays_only_the_tail(
    kafka: Broker, statefulset: StatefulSetFactory
) -> None:
    topics, sts = await start_pods(kafka, statefulset, "warm", 2)
    load = await SteadyLoad(kafka.bootstrap_servers, topics.trades, rate=RATE, seed=2).start()
    try:
        await load.run_for(8)
        restart = await kill_and_restart(sts, 1, load)
        await load.run_for(3)
        inputs = await load.stop()
        assert_warm(restart, inputs)
        await expect_exact_windows(kafka.bootstrap_servers, topics, inputs, explain=sts.diagnosis)
    finally:
        await load.close()


async def test_sigkill_and_restart_on_an_emptied_volume_restores_everything(
    kafka: Broker, statefulset: StatefulSetFactory
) -> None:
    topics, sts = await start_pods(kafka, statefulset, "cold", 2)
    load = await SteadyLoad(kafka.bootstrap_servers, topics.trades, rate=RATE, seed=3).start()
    try:
        await load.run_for(6)
        warm = await kill_and_restart(sts, 1, load)
        assert_warm(warm, load.records)
        await load.run_for(4)
        cold = await kill_and_restart(sts, 1, load, wipe=True)
        earliest = await earliest_offsets(kafka.bootstrap_servers, changelog(topics))
        for p in sorted(cold.recovery.partitions):
            # Nothing local: faust reads the partition's changelog from its first offset.
            assert cold.recovery.start[p] == earliest[p] - 1, (p, cold, earliest)
        assert cold.recovery.total_replayed > 10 * len(cold.recovery.partitions), cold
        assert cold.recovery.total_replayed > warm.recovery.total_replayed
        # The pod's own counter agrees: it applied every record (the changelog is not
        # compacted yet at this size, so records = offsets).
        assert cold.restored == cold.recovery.total_replayed
        assert cold.restored > warm.restored
        await load.run_for(3)
        inputs = await load.stop()
        await expect_exact_windows(kafka.bootstrap_servers, topics, inputs, explain=sts.diagnosis)
    finally:
        await load.close()


async def test_standby_replica_takes_over_without_a_full_restore(
    kafka: Broker, statefulset: StatefulSetFactory
) -> None:
    """The survivor's copy of a dead pod's partitions came from its standby replica.

    tradestats-1 starts alone and owns everything; tradestats-0 joins and takes some: the
    partitions tradestats-1 keeps were never active on tradestats-0, only standbys there.
    After tradestats-1 dies, tradestats-0 recovers them starting from a local offset (so a
    local copy existed, which only the standby can have written) and replays little of the
    changelog, where a full restore would replay all of it.
    """
    topics = Topics.unique("standby")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    env = pod_env(kafka.bootstrap_servers, topics, PARTITIONS, standby_replicas=1)
    sts = statefulset(env, PARTITIONS)
    sts.start(1)
    sts.wait_settled()
    sts.start(0)
    assignment = sts.wait_settled()
    once_active_on_0 = {p for r in sts.recoveries(0) for p in r.partitions}
    kept = set(assignment[1]) - once_active_on_0
    assert kept, f"every partition of tradestats-1 was active on tradestats-0 once: {assignment}"
    load = await SteadyLoad(kafka.bootstrap_servers, topics.trades, rate=RATE, seed=4).start()
    try:
        await load.run_for(8)
        assert kept <= sts.standbys(0), f"tradestats-0 is no standby of {kept}"
        restored_before = restored(sts, 0)
        recoveries_before = len(sts.recoveries(0))
        sts.kill(1)
        # Static membership: the dead pod keeps its partitions until its session times out.
        takeover = await asyncio.to_thread(
            sts.wait_recovery, 0, min(kept), after=recoveries_before, timeout=90
        )
        assignment = await asyncio.to_thread(sts.wait_settled)
        assert assignment == {0: list(range(PARTITIONS))}
        earliest = await earliest_offsets(kafka.bootstrap_servers, changelog(topics))
        tickers = tickers_per_partition(load.records)
        full = sum(takeover.highwater[p] - earliest[p] + 1 for p in kept)
        replayed = sum(takeover.replayed(p) for p in kept)
        print(f"takeover of {sorted(kept)}: replayed {replayed} of {full}: {takeover}")
        for p in kept:
            assert takeover.start[p] >= 0, f"partition {p}: no standby copy ({takeover})"
            assert takeover.replayed(p) <= tickers[p] + 1, (p, takeover)
        assert full > 10 * len(kept)
        assert replayed * 10 < full
        applied = restored(sts, 0) - restored_before
        assert applied <= sum(tickers[p] + 1 for p in kept), f"applied {applied} on takeover"
        # faust buffers standby records in memory (up to standby_buffer_size) and applies
        # them at the latest when the assignment changes: by now they are counted.
        standby_applied = restored(sts, 0, "standby")
        print(f"takeover: {applied:.0f} active records applied, {standby_applied:.0f} standby")
        assert standby_applied > 0

        sts.start(1)  # the StatefulSet controller brings the pod back
        await asyncio.to_thread(sts.wait_settled)
        await load.run_for(3)
        inputs = await load.stop()
        await expect_exact_windows(kafka.bootstrap_servers, topics, inputs, explain=sts.diagnosis)
    finally:
        await load.close()


@pytest.mark.soak
@pytest.mark.timeout(1800)
async def test_repeated_kills_warm_and_cold_soak(
    kafka: Broker, statefulset: StatefulSetFactory
) -> None:
    """Ten SIGKILLs of random pods of three, half of them losing their volume, with more
    state (300 tickers); every restart replays only the tail, or everything when wiped."""
    topics, sts = await start_pods(kafka, statefulset, "kills", 3)
    source = trade_source(ticker_count=300, seed=10)
    load = SteadyLoad(kafka.bootstrap_servers, topics.trades, rate=3000, source=source)
    await load.start()
    rng = random.Random(10)
    try:
        for _ in range(10):
            await load.run_for(15)
            wipe = rng.random() < 0.5
            restart = await kill_and_restart(sts, rng.randrange(3), load, wipe=wipe)
            if wipe:
                earliest = await earliest_offsets(kafka.bootstrap_servers, changelog(topics))
                for p, start in restart.recovery.start.items():
                    assert start == earliest[p] - 1, (p, restart, earliest)
            else:
                assert_warm(restart, load.records)
        await load.run_for(5)
        inputs = await load.stop()
        await expect_exact_windows(
            kafka.bootstrap_servers, topics, inputs, within=300, explain=sts.diagnosis
        )
    finally:
        await load.close()
