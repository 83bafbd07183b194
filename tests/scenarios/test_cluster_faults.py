"""Scenario 8: broker faults on a real three-node cluster, under continuous input.

Modelled on Kafka's own Streams broker-bounce system tests: a clean bounce of each broker in
turn; a hard kill of the broker leading the changelog and output partitions; a hard kill of
the active KRaft controller; one broker down for a minute. The cluster is this module's own
(three KRaft nodes, replication 3, ``min.insync.replicas=2``). As the compose file's and the
Kubernetes manifests' init jobs do, the test creates the input, output and dead-letter topics
beforehand, with replication 3; the worker creates its changelog with the same replication
(``TOPIC_REPLICATION_FACTOR=3``). A producer keeps writing trades, bad records among them,
through every fault (acks=all, idempotent: it buffers and retries while a leader moves).

Nothing is done to the worker. It must never exit nor be restarted (same pid, no "Crashed" in
its log), it must progress while a node is down (two replicas of three are enough to write),
its lag must be back to zero within ``CATCH_UP_SECONDS`` of the cluster healing, and in the end
every window is exact against the oracle and every bad record dead-lettered exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devtools.kafka import LocalKafkaCluster
from tests.integration.harness import Topics, consume
from tests.oracle import expected_windows
from tests.scenarios.load import SteadyLoad, expect_exact_windows
from tests.scenarios.statefulset import StatefulSet, pod_env
from tests.scenarios.test_bad_input import (
    assert_no_stall,
    check_conservation,
    known_bad,
    mixed_source,
)

pytestmark = [pytest.mark.broker, pytest.mark.asyncio, pytest.mark.usefixtures("quiet_clients")]

PARTITIONS = 4
REPLICATION = 3
#: A restarted node is back in every ISR within this (it replays what it missed).
HEAL_SECONDS = 180.0
#: The bound this scenario states: after the cluster healed, the worker has read all its input.
CATCH_UP_SECONDS = 60.0
#: The worker must make progress within this after a fault, with a node down or not.
PROGRESS_SECONDS = 120.0
PROCESSED = "tradestats_trades_processed_total"
DEAD_LETTERED = "tradestats_trades_dead_lettered_total{"
CHECKPOINTS = "tradestats_checkpoint_duration_seconds_count"


@dataclass(frozen=True)
class Profile:
    """How hard a scenario pushes: the CI short form or the on-demand soak."""

    rate: float
    """Records per second, bad ones included."""
    hold: float
    """Seconds of load before, between and after the faults."""
    pods: int
    rounds: int
    """How many times the fault is repeated."""
    down: float
    """Seconds a killed node stays down (at least until the worker progressed without it)."""
    long_down: float
    """Seconds of the "one broker down for a minute" scenario."""


SHORT = Profile(rate=500, hold=4, pods=1, rounds=1, down=8, long_down=60)
SOAK = Profile(rate=2000, hold=30, pods=2, rounds=3, down=30, long_down=300)
PROFILES = [
    pytest.param(SHORT, id="short", marks=pytest.mark.timeout(900)),
    pytest.param(SOAK, id="soak", marks=[pytest.mark.soak, pytest.mark.timeout(3600)]),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaCluster]:
    """A cluster only this module uses: its faults disturb no other test."""
    nodes = LocalKafkaCluster(tmp_path_factory.mktemp("fault-cluster"))
    nodes.start(timeout=240)  # a fresh machine resolves the jars with Maven first
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(autouse=True)
def healthy_cluster(cluster: LocalKafkaCluster) -> None:
    """Each scenario starts on a healed cluster, whatever the one before left behind."""
    for node_id in sorted(set(cluster.node_ids) - set(cluster.running_nodes())):
        cluster.start_node(node_id, timeout=120)
    cluster.wait_healthy(HEAL_SECONDS)


@dataclass
class Rig:
    """One scenario's cluster, pods and load, and what it saw happen, in order."""

    cluster: LocalKafkaCluster
    sts: StatefulSet
    load: SteadyLoad
    topics: Topics
    profile: Profile
    pids: dict[int, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note(self, event: str) -> None:
        self.events.append(f"{time.monotonic() - self.started:6.1f} s  {event}")

    def check_workers(self) -> None:
        """Every pod alive, with the pid it started with, and no crash in its log."""
        self.sts.check_alive()
        for i, pid in self.pids.items():
            pod = self.sts.pod(i)
            assert pod.process is not None
            assert pod.process.pid == pid, f"{pod.name} restarted"
            crashes = [
                line for line in self.sts.log_since_start(i).splitlines() if "Crashed" in line
            ]
            assert not crashes, f"{pod.name} logged a crash:\n" + "\n".join(crashes[:10])

    async def act(self, event: str, action: Callable[[], object]) -> None:
        """Do something to the cluster (it blocks: in a thread) while the load goes on."""
        began = time.monotonic()
        await asyncio.to_thread(action)
        self.note(f"{event} ({time.monotonic() - began:.1f} s)")

    async def progress(self, context: str) -> float:
        """Until the pods have handled ``rate`` more records and completed a checkpoint (its
        results and state acknowledged by the cluster); returns the seconds it took."""
        began = time.monotonic()
        handled, checkpoints = await self._counters()
        while True:
            now_handled, now_checkpoints = await self._counters()
            if now_handled >= handled + self.profile.rate and now_checkpoints > checkpoints:
                break
            self.check_workers()
            assert time.monotonic() - began < PROGRESS_SECONDS, (
                f"no progress {context} within {PROGRESS_SECONDS:g} s: records handled "
                f"{handled:.0f} -> {now_handled:.0f}, checkpoints {checkpoints:.0f} -> "
                f"{now_checkpoints:.0f}\n" + "\n".join(self.events) + f"\n{self.sts.log_tails()}"
            )
            await self.load.run_for(0.5)
        seconds = time.monotonic() - began
        self.note(f"progressing {context} ({seconds:.1f} s)")
        return seconds

    async def down_for(self, node_id: int, seconds: float, since: float) -> None:
        """Keep a node down until ``seconds`` after ``since``, the pods progressing meanwhile."""
        await self.progress(f"with node {node_id} down")
        await self.load.run_for(max(0.0, since + seconds - time.monotonic()))

    async def bring_back(self, node_id: int) -> None:
        """Start a node again, wait until the cluster healed, and for progress after it."""
        await self.act(f"node {node_id} started", lambda: self.cluster.start_node(node_id))
        healed = await asyncio.to_thread(self.cluster.wait_healthy, HEAL_SECONDS)
        self.note(f"cluster healed ({healed:.1f} s)")
        await self.progress("after the cluster healed")

    async def caught_up(self) -> float:
        """Until one scrape shows no lag on any input partition: the input is all read."""
        began = time.monotonic()
        lag: dict[str, float] = {}
        while time.monotonic() - began < CATCH_UP_SECONDS:
            self.check_workers()
            lag = {
                series: value
                for i in self.sts.running
                for series, value in (await asyncio.to_thread(self.sts.pod(i).metrics)).items()
                if series.startswith("tradestats_consumer_lag{")
            }
            if len(lag) == PARTITIONS and not any(lag.values()):
                seconds = time.monotonic() - began
                self.note(f"lag zero ({seconds:.1f} s after healing)")
                return seconds
            await self.load.run_for(0.2)
        raise AssertionError(
            f"lag not zero within {CATCH_UP_SECONDS:g} s of the cluster healing: {lag}\n"
            + "\n".join(self.events)
            + f"\n{self.sts.log_tails()}"
        )

    def leaders(self, topics: list[str]) -> dict[tuple[str, int], int]:
        return self.cluster.partition_leaders(topics)

    async def _counters(self) -> tuple[float, float]:
        """(records the pods took care of - aggregated or dead-lettered -, checkpoints)."""
        scrapes = await asyncio.to_thread(lambda: [self.sts.pod(i).metrics() for i in self.pids])
        handled = checkpoints = 0.0
        for scrape in scrapes:
            for series, value in scrape.items():
                if series == PROCESSED or series.startswith(DEAD_LETTERED):
                    handled += value
                elif series == CHECKPOINTS:
                    checkpoints += value
        return handled, checkpoints


async def init_job(cluster: LocalKafkaCluster, topics: Topics) -> None:
    """What a deployment's init job does: the input, output and dead-letter topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(name, PARTITIONS, REPLICATION)
                for name in (topics.trades, topics.stats, topics.dlq)
            ]
        )
    finally:
        await admin.close()


async def under_load(
    cluster: LocalKafkaCluster,
    statefulset: Callable[[dict[str, str], int], StatefulSet],
    label: str,
    profile: Profile,
    faults: Callable[[Rig], Awaitable[None]],
) -> None:
    """Pods and load on the cluster; ``faults`` does its worst; then everything is checked."""
    bootstrap = cluster.bootstrap_servers
    topics = Topics.unique(label)
    await init_job(cluster, topics)
    env = pod_env(bootstrap, topics, PARTITIONS, topic_replication_factor=REPLICATION)
    sts = statefulset(env, PARTITIONS)
    await asyncio.to_thread(sts.scale_to, profile.pods)
    await asyncio.to_thread(sts.wait_settled)
    replicated = await asyncio.to_thread(
        cluster.describe, [topics.trades, topics.stats, topics.dlq, topics.changelog]
    )
    assert all(len(part["replicas"]) == REPLICATION for part in replicated.values()), replicated
    source = mixed_source(known_bad(), every=20, seed=8)
    load = SteadyLoad(bootstrap, topics.trades, rate=profile.rate, source=source, seed=8)
    rig = Rig(cluster, sts, await load.start(), topics, profile)
    rig.pids = {i: pod.process.pid for i, pod in enumerate(sts.pods) if pod.process}
    try:
        await load.run_for(profile.hold)
        await faults(rig)
        await rig.caught_up()
        await load.run_for(profile.hold)
        inputs = await load.stop()
        rig.note(f"load stopped: {len(inputs)} records, slowest ack {load.slowest_ack:.1f} s")
        rig.check_workers()

        verdict = await expect_exact_windows(
            bootstrap, topics, inputs, within=120, explain=sts.diagnosis
        )
        expected = expected_windows(inputs, 5000, 1000)
        rejected = len(expected.invalid) + len(expected.late)
        dead = await consume(bootstrap, topics.dlq, done=lambda r: len(r) >= rejected, within=120)
        await asyncio.to_thread(assert_no_stall, sts)
        check_conservation(sts, inputs, expected.invalid, expected.late, dead, topics.trades)
        rig.check_workers()
        rig.note(
            f"{len(inputs)} records, {verdict.windows} windows exact "
            f"({verdict.duplicates} duplicates), {len(expected.invalid)} invalid and "
            f"{len(expected.late)} late dead-lettered once each"
        )
    finally:
        await load.close()
        print(f"{label}:\n" + "\n".join(rig.events))  # pytest shows it when the test failed


# --- the faults ------------------------------------------------------------------------------


async def bounce_each_broker(rig: Rig) -> None:
    """SIGTERM and start again, one node after the other; each back in sync before the next
    (a rolling restart, as an operator does it)."""
    for _ in range(rig.profile.rounds):
        for node_id in rig.cluster.node_ids:
            await rig.act(f"node {node_id} SIGTERM", lambda n=node_id: rig.cluster.stop_node(n))
            await rig.bring_back(node_id)
            await rig.load.run_for(rig.profile.hold)


async def kill_changelog_and_output_leader(rig: Rig) -> None:
    """SIGKILL the node that leads the most changelog and output partitions."""
    watched = [rig.topics.changelog, rig.topics.stats]
    for _ in range(rig.profile.rounds):
        leaders = await asyncio.to_thread(rig.leaders, watched)
        led_by: dict[int, set[str]] = {}
        for (topic, _partition), node_id in leaders.items():
            led_by.setdefault(node_id, set()).add(topic)
        # Prefer a node leading partitions of both topics, then the one leading the most.
        victim = max(
            led_by,
            key=lambda n: (len(led_by[n]), sum(node == n for node in leaders.values())),
        )
        rig.note(f"leaders {sorted(leaders.items())}")
        killed_at = time.monotonic()
        await rig.act(f"node {victim} SIGKILL", lambda n=victim: rig.cluster.kill_node(n))
        await rig.down_for(victim, rig.profile.down, killed_at)
        moved = await asyncio.to_thread(rig.leaders, watched)
        assert victim not in moved.values(), f"node {victim} still leads: {moved}"
        await rig.bring_back(victim)
        await rig.load.run_for(rig.profile.hold)


async def kill_active_controller(rig: Rig) -> None:
    """SIGKILL the KRaft quorum's leader; the other two elect a new one."""
    for _ in range(rig.profile.rounds):
        controller = rig.cluster.active_controller()
        assert controller is not None, "no active controller before the fault"
        killed_at = time.monotonic()
        await rig.act(
            f"active controller, node {controller}, SIGKILL",
            lambda n=controller: rig.cluster.kill_node(n),
        )
        while rig.cluster.active_controller() in (None, controller):
            assert time.monotonic() - killed_at < PROGRESS_SECONDS, "no new controller elected"
            await rig.load.run_for(0.2)
        rig.note(f"node {rig.cluster.active_controller()} is the active controller")
        await rig.down_for(controller, rig.profile.down, killed_at)
        await rig.bring_back(controller)
        await rig.load.run_for(rig.profile.hold)


async def one_broker_down_a_while(rig: Rig) -> None:
    """SIGKILL the node leading the most input partitions; start it again after
    ``long_down`` seconds: it has a lot to replay and the pods must not wait for it."""
    for _ in range(rig.profile.rounds):
        leaders = await asyncio.to_thread(rig.leaders, [rig.topics.trades])
        counts = {n: list(leaders.values()).count(n) for n in set(leaders.values())}
        victim = max(counts, key=lambda n: counts[n])
        killed_at = time.monotonic()
        await rig.act(f"node {victim} SIGKILL", lambda n=victim: rig.cluster.kill_node(n))
        await rig.down_for(victim, rig.profile.long_down, killed_at)
        await rig.progress(f"after {rig.profile.long_down:g} s with node {victim} down")
        await rig.bring_back(victim)
        await rig.load.run_for(rig.profile.hold)


# --- the scenarios ---------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
async def test_clean_bounce_of_each_broker_in_turn(
    cluster: LocalKafkaCluster,
    statefulset: Callable[[dict[str, str], int], StatefulSet],
    profile: Profile,
) -> None:
    await under_load(cluster, statefulset, "bounce", profile, bounce_each_broker)


@pytest.mark.parametrize("profile", PROFILES)
async def test_hard_kill_of_the_changelog_and_output_leader(
    cluster: LocalKafkaCluster,
    statefulset: Callable[[dict[str, str], int], StatefulSet],
    profile: Profile,
) -> None:
    await under_load(cluster, statefulset, "kill-leader", profile, kill_changelog_and_output_leader)


@pytest.mark.parametrize("profile", PROFILES)
async def test_hard_kill_of_the_active_controller(
    cluster: LocalKafkaCluster,
    statefulset: Callable[[dict[str, str], int], StatefulSet],
    profile: Profile,
) -> None:
    await under_load(cluster, statefulset, "kill-controller", profile, kill_active_controller)


@pytest.mark.parametrize("profile", PROFILES)
async def test_one_broker_down_for_a_minute(
    cluster: LocalKafkaCluster,
    statefulset: Callable[[dict[str, str], int], StatefulSet],
    profile: Profile,
) -> None:
    await under_load(cluster, statefulset, "broker-down", profile, one_broker_down_a_while)
