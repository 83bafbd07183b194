"""The local multi-node cluster against real clients: quorum, replication, failover, CLI.

One three-node cluster serves the whole module; every test leaves it healthy (all nodes up,
every replica in sync) for the next. No skips: if it cannot start, these tests fail.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import NotEnoughReplicasError, RequestTimedOutError

from devtools.kafka import BrokerError, LocalKafka, LocalKafkaCluster

pytestmark = pytest.mark.broker

HEAL_SECONDS = 120.0
WAIT_SECONDS = 60.0
T = TypeVar("T")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaCluster]:
    nodes = LocalKafkaCluster(tmp_path_factory.mktemp("kafka-cluster"))
    nodes.start(timeout=180)  # the first run may resolve jars with Maven
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(autouse=True)
def healthy_after(cluster: LocalKafkaCluster) -> Iterator[None]:
    """Whatever a test did to its nodes, the next one starts on a healed cluster."""
    yield
    for node_id in sorted(set(cluster.node_ids) - set(cluster.running_nodes())):
        cluster.start_node(node_id, timeout=120)
    cluster.wait_healthy(HEAL_SECONDS)


async def create_topic(cluster: LocalKafkaCluster, **shape: object) -> str:
    """A new topic; ``shape``: NewTopic's num_partitions/replication_factor or
    replica_assignments."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.live_bootstrap_servers())
    await admin.start()
    try:
        if "replica_assignments" in shape:
            shape = {"num_partitions": -1, "replication_factor": -1, **shape}
        await admin.create_topics([NewTopic(topic, **shape)])  # type: ignore[arg-type]
    finally:
        await admin.close()
    return topic


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=30_000
    )
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()


async def consume_all(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    values: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while len(values) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                values.extend(record.value for record in batch)
    finally:
        await consumer.stop()
    return values


async def wait_for(what: str, probe: Callable[[], T], accept: Callable[[T], bool]) -> T:
    """Poll ``probe()`` (in a thread: it blocks) until ``accept`` takes what it returned."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        seen = await asyncio.to_thread(probe)
        if accept(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {WAIT_SECONDS:g} s; last seen {seen!r}")
        await asyncio.sleep(0.2)


def test_three_nodes_form_one_quorum(cluster: LocalKafkaCluster) -> None:
    assert cluster.running_nodes() == [1, 2, 3]
    pids = [node.pid for node in cluster.nodes]
    assert len(set(pids)) == 3
    ports = [port for node in cluster.nodes for port in node.ports.values()]
    assert len(set(ports)) == len(ports), "every node has ports of its own"
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert max(ports) < low, "ports outside the ephemeral range survive a node's downtime"
    voters = {
        node.config_file.read_text().split("controller.quorum.voters=")[1].split()[0]
        for node in cluster.nodes
    }
    assert len(voters) == 1, "every node knows the same voters"
    assert voters.pop().count("@") == 3
    assert cluster.active_controller() in {1, 2, 3}
    saved = json.loads((cluster.state_dir / "cluster.json").read_text())
    assert {node.node_id: node.ports["CONTROLLER"] for node in cluster.nodes} == {
        int(node): port for node, port in saved["voters"].items()
    }


@pytest.mark.asyncio
async def test_topics_and_group_offsets_are_replicated_three_ways(
    cluster: LocalKafkaCluster,
) -> None:
    topic = await create_topic(cluster, num_partitions=3, replication_factor=3)
    await produce(cluster.bootstrap_servers, topic, [b"a"])
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap_servers, group_id=f"g-{topic}")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.commit({TopicPartition(topic, 0): 1})
    finally:
        await consumer.stop()
    described = await asyncio.to_thread(cluster.describe, [topic, "__consumer_offsets"])
    assert described, "no partitions described"
    for key, partition in described.items():
        assert sorted(partition["replicas"]) == [1, 2, 3], (key, partition)
        assert sorted(partition["isr"]) == [1, 2, 3], (key, partition)
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    entries = response.to_object()["resources"][0]["config_entries"]
    configs = {entry["config_names"]: entry["config_value"] for entry in entries}
    assert configs["min.insync.replicas"] == "2"


@pytest.mark.asyncio
async def test_min_insync_replicas_two_refuses_a_write_only_one_replica_holds(
    cluster: LocalKafkaCluster,
) -> None:
    topic = await create_topic(cluster, replica_assignments={0: [1, 2]})
    await asyncio.to_thread(cluster.kill_node, 2)
    await wait_for(
        "shrunk ISR", lambda: cluster.describe([topic])[(topic, 0)]["isr"], lambda isr: isr == [1]
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=cluster.live_bootstrap_servers(), acks="all", request_timeout_ms=5000
    )
    await producer.start()
    timeouts = 0
    try:
        # Until the leader itself has applied the shrunk ISR, it waits for node 2 in vain.
        while True:
            with pytest.raises((NotEnoughReplicasError, RequestTimedOutError)) as refused:
                await producer.send_and_wait(topic, b"only one copy")
            if refused.type is NotEnoughReplicasError:
                break
            timeouts += 1
            assert timeouts < 10, "the leader never refused the write for too few replicas"
    finally:
        await producer.stop()


@pytest.mark.asyncio
async def test_killing_a_partition_leader_moves_leadership_and_loses_nothing(
    cluster: LocalKafkaCluster,
) -> None:
    topic = await create_topic(cluster, num_partitions=1, replication_factor=3)
    await produce(cluster.bootstrap_servers, topic, [b"before"])
    leader = (await asyncio.to_thread(cluster.partition_leaders, [topic]))[(topic, 0)]
    await asyncio.to_thread(cluster.kill_node, leader)
    assert leader not in cluster.running_nodes()
    new_leader = await wait_for(
        "new leader",
        lambda: cluster.partition_leaders([topic])[(topic, 0)],
        lambda node: node not in (-1, leader),
    )
    await produce(cluster.bootstrap_servers, topic, [b"during"])
    await asyncio.to_thread(cluster.start_node, leader, timeout=120)
    healed = await asyncio.to_thread(cluster.wait_healthy, HEAL_SECONDS, [topic])
    print(f"leader {leader} killed, {new_leader} took over; in sync again {healed:.1f} s later")
    values = await consume_all(cluster.bootstrap_servers, topic, 2)
    assert values == [b"before", b"during"]


@pytest.mark.asyncio
async def test_killing_the_active_controller_elects_another(cluster: LocalKafkaCluster) -> None:
    controller = cluster.active_controller()
    assert controller is not None
    pid = cluster.node(controller).pid
    await asyncio.to_thread(cluster.kill_node, controller)
    successor = await wait_for(
        "new active controller",
        cluster.active_controller,
        lambda node: node not in (None, controller),
    )
    # The metadata names the dead node until it is fenced; admin clients may pick it.
    await wait_for("fencing", cluster.registered_brokers, lambda brokers: controller not in brokers)
    topic = await create_topic(cluster, num_partitions=1, replication_factor=2)
    await asyncio.to_thread(cluster.start_node, controller, timeout=120)
    assert cluster.node(controller).pid != pid
    assert cluster.active_controller() in {1, 2, 3}
    print(f"controller {controller} killed; {successor} elected; topic {topic} created meanwhile")


def test_sigterm_moves_leaderships_before_the_node_exits(cluster: LocalKafkaCluster) -> None:
    """A controlled shutdown: no partition is left without a leader at any time."""
    topic = asyncio.run(create_topic(cluster, num_partitions=6, replication_factor=3))
    leaders = cluster.partition_leaders([topic])
    node_id = max(set(leaders.values()))
    cluster.stop_node(node_id)
    after = cluster.partition_leaders([topic])
    assert all(leader not in (-1, node_id) for leader in after.values()), after
    cluster.start_node(node_id, timeout=120)
    assert node_id in cluster.running_nodes()


def cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtools.kafka", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_cli_status_kill_and_start_of_one_node(cluster: LocalKafkaCluster) -> None:
    status = cli(cluster.state_dir, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "3 running" in status.stdout
    assert cluster.bootstrap_servers in status.stdout
    env = cli(cluster.state_dir, "env")
    assert f"export KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap_servers}" in env.stdout

    pid = cluster.node(3).pid
    killed = cli(cluster.state_dir, "kill", "--node", "3")
    assert killed.returncode == 0, killed.stderr
    assert cluster.running_nodes() == [1, 2], (killed.stderr, pid, cluster.node(3).pid)
    status = cli(cluster.state_dir, "status")
    assert status.returncode == 1
    assert "node 3: down" in status.stdout
    started = cli(cluster.state_dir, "start", "--node", "3")
    assert started.returncode == 0, started.stdout + started.stderr
    assert cluster.running_nodes() == [1, 2, 3]
    assert cluster.node(3).pid != pid


def test_misuse_is_a_clear_error(tmp_path: Path, cluster: LocalKafkaCluster) -> None:
    with pytest.raises(BrokerError, match="holds no cluster"):
        LocalKafkaCluster.open(tmp_path)
    with pytest.raises(BrokerError, match="no node 4"):
        cluster.node(4)
    with pytest.raises(BrokerError, match="cluster of 3 nodes, not 5"):
        LocalKafkaCluster(cluster.state_dir, size=5).start()
    wrong = cli(cluster.state_dir, "start", "--nodes", "5")
    assert wrong.returncode == 1
    assert "cluster of 3 nodes" in wrong.stderr
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "state.json").write_text("{}")
    refused = cli(tmp_path / "single", "start", "--nodes", "3")
    assert refused.returncode == 1
    assert "holds a single broker" in refused.stderr
    assert "--node" in cli(tmp_path / "single", "kill", "--node", "1").stderr
    assert LocalKafka(tmp_path / "single").pid is None
