"""A local multi-node Kafka cluster: N KRaft nodes on loopback, each one a :class:`LocalKafka`.

Production Kafka has several brokers, replication and leaders that move; a single broker
cannot show what a client does when the leader of its partition dies. Every node here is
broker and controller at once (a quorum of N voters) with its own state directory, ports, pid
and log under ``<state_dir>/node-<id>``. ``cluster.json`` keeps what the nodes must agree on
for good: the cluster id and every voter's controller port.

Topics default to replication factor min(3, N) and ``min.insync.replicas`` one less (3 and 2
on three nodes), internal topics (consumer offsets, transactions) included, as production
clusters run them: a write acknowledged by ``acks=all`` survives the loss of any one node.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from devtools.kafka.broker import (
    CONTROLLER,
    DEFAULT_TIMEOUT,
    BrokerError,
    BrokerStartError,
    LocalKafka,
    describe_topics,
    new_cluster_id,
    registered_brokers,
    state_dir_lock,
)

__all__ = ["CLUSTER_FILE", "LocalKafkaCluster"]

CLUSTER_FILE = "cluster.json"
# The KRaft metadata log's record of the quorum's election state, in each node's log.dirs.
_QUORUM_STATE = Path("__cluster_metadata-0") / "quorum-state"


@dataclass
class LocalKafkaCluster:
    """``size`` local nodes bound to one state directory.

    ``start()`` adopts nodes that are already running (also ones another process started), so
    the CLI and tests can share a cluster. Single nodes can be stopped (SIGTERM), killed
    (SIGKILL) and started again on their data and ports, as a chaos test does.
    """

    state_dir: Path
    size: int = 3
    heap: str = "512m"
    properties: Mapping[str, str] = field(default_factory=dict)
    """Extra broker properties for every node; they override the replication defaults."""
    cache_dir: Path | None = None
    nodes: list[LocalKafka] = field(init=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).absolute()
        if self.size < 1:
            raise ValueError(f"a cluster needs at least one node, not {self.size}")
        replicated = {
            "default.replication.factor": self.replication_factor,
            "min.insync.replicas": self.min_insync_replicas,
            "offsets.topic.replication.factor": self.replication_factor,
            "transaction.state.log.replication.factor": self.replication_factor,
            "transaction.state.log.min.isr": self.min_insync_replicas,
            "share.coordinator.state.topic.replication.factor": self.replication_factor,
            "share.coordinator.state.topic.min.isr": self.min_insync_replicas,
        }
        properties = {key: str(value) for key, value in replicated.items()} | dict(self.properties)
        self.nodes = [
            LocalKafka(
                self.state_dir / f"node-{node_id}",
                heap=self.heap,
                properties=properties,
                cache_dir=self.cache_dir,
                node_id=node_id,
            )
            for node_id in range(1, self.size + 1)
        ]

    @classmethod
    def open(cls, state_dir: Path, **options: Any) -> LocalKafkaCluster:
        """The cluster a state directory holds, with the size it was created with."""
        saved = _read_json(Path(state_dir) / CLUSTER_FILE)
        if not saved:
            raise BrokerError(f"{state_dir} holds no cluster ({CLUSTER_FILE} is missing)")
        return cls(Path(state_dir), size=int(saved["size"]), **options)

    @staticmethod
    def holds_cluster(state_dir: Path) -> bool:
        return (Path(state_dir) / CLUSTER_FILE).exists()

    # -- topology ------------------------------------------------------------------------------

    @property
    def replication_factor(self) -> int:
        return min(3, self.size)

    @property
    def min_insync_replicas(self) -> int:
        return max(1, self.replication_factor - 1)

    @property
    def node_ids(self) -> list[int]:
        return [node.node_id for node in self.nodes]

    def node(self, node_id: int) -> LocalKafka:
        if node_id not in self.node_ids:
            raise BrokerError(f"no node {node_id}: the nodes are {self.node_ids}")
        return self.nodes[node_id - 1]

    @property
    def bootstrap_servers(self) -> str:
        """Every node's PLAINTEXT address: clients reach the cluster while any node is up."""
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def client_env(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers}

    def running_nodes(self) -> list[int]:
        return [node.node_id for node in self.nodes if node.is_running()]

    def is_running(self) -> bool:
        """True if every node is up (see ``running_nodes()`` for which are)."""
        return len(self.running_nodes()) == self.size

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, *, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """Start every node that is not running (all at once: none is ready without a
        majority of the quorum), then wait until all are registered brokers."""
        self._prepare()
        launched = [node for node in self.nodes if node.pid is None]
        try:
            self._each(lambda node: node.start(wait=False), self.nodes)  # formats in parallel
            self.wait_ready(timeout)
        except BaseException:
            self._each(lambda node: node.stop(timeout=5.0), launched)  # no half-started cluster
            raise
        return self

    def wait_ready(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.wait_ready(max(1.0, deadline - time.monotonic()))

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every node at once: one after another, the last ones would wait for a
        controller quorum that is already gone. Idempotent."""
        self._each(lambda node: node.stop(timeout), self.nodes)

    def kill(self) -> None:
        """SIGKILL every node."""
        self._each(LocalKafka.kill, self.nodes)

    def restart(self, *, timeout: float = DEFAULT_TIMEOUT) -> Self:
        self.stop()
        return self.start(timeout=timeout)

    def start_node(self, node_id: int, *, timeout: float = DEFAULT_TIMEOUT) -> LocalKafka:
        """Start one node on its data and ports (a majority must be up for it to be ready)."""
        self._prepare()
        return self.node(node_id).start(timeout=timeout)

    def stop_node(self, node_id: int, timeout: float = 30.0) -> None:
        """SIGTERM one node: a controlled shutdown that moves its leaderships first."""
        self.node(node_id).stop(timeout)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would: clients find out by timeouts."""
        self.node(node_id).kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _prepare(self) -> None:
        """Give every node the cluster id and the quorum's voters, fixed at the first start."""
        with state_dir_lock(self.state_dir):
            cluster_file = self.state_dir / CLUSTER_FILE
            saved = _read_json(cluster_file)
            if saved and int(saved["size"]) != self.size:
                raise BrokerError(
                    f"{self.state_dir} holds a cluster of {saved['size']} nodes, not {self.size}"
                )
            for node in self.nodes:
                if (node.state_dir / "state.json").exists() and not saved:
                    raise BrokerStartError(
                        f"{node.state_dir} exists but {cluster_file} does not: delete it"
                    )
            cluster_id = str(saved.get("cluster_id") or new_cluster_id())
            voters = {int(node): port for node, port in saved.get("voters", {}).items()}
            for node in self.nodes:
                node.cluster_id = cluster_id
                node.voters = dict(voters)  # empty on the first start: ports are free to choose
                voters.setdefault(node.node_id, node.reserve_ports()[CONTROLLER])
            for node in self.nodes:
                node.voters = voters
            record = {"cluster_id": cluster_id, "size": self.size, "voters": voters}
            tmp = cluster_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, cluster_file)

    def _each(self, action: Callable[[LocalKafka], object], nodes: Iterable[LocalKafka]) -> None:
        """``action`` on each node concurrently; the first error is raised after all ran."""
        nodes = list(nodes)
        if not nodes:
            return
        with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
            for future in [pool.submit(action, node) for node in nodes]:
                future.result()

    # -- observing -----------------------------------------------------------------------------

    def live_bootstrap_servers(self) -> str:
        """The addresses of the nodes that are up (admin requests then never wait on a dead
        one)."""
        live = [node.bootstrap_servers for node in self.nodes if node.is_running()]
        if not live:
            raise BrokerError(f"no node of the cluster in {self.state_dir} is running")
        return ",".join(live)

    def describe(
        self, topics: list[str] | None, timeout: float = 10.0
    ) -> dict[tuple[str, int], Any]:
        """Metadata of every partition of ``topics`` (None: of all topics): ``leader`` (-1
        while there is none), ``replicas``, ``isr``.

        A broker answers for a topic created a moment ago with an error until the metadata
        reached it: asked again until ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            described = describe_topics(self.live_bootstrap_servers(), topics, timeout)
            errors = {topic["topic"]: topic["error_code"] for topic in described}
            if not any(errors.values()):
                return {
                    (topic["topic"], partition["partition"]): partition
                    for topic in described
                    for partition in topic["partitions"]
                }
            if time.monotonic() > deadline:
                raise BrokerError(f"metadata of {topics} has errors (topic: code): {errors}")
            time.sleep(0.2)

    def registered_brokers(self) -> list[int]:
        """The nodes the metadata lists as live brokers: a killed node stays listed until its
        broker session times out (``broker.session.timeout.ms``), then it is fenced."""
        return registered_brokers(self.live_bootstrap_servers())

    def partition_leaders(self, topics: list[str]) -> dict[tuple[str, int], int]:
        """The node leading each partition of ``topics`` (-1: none at the moment)."""
        return {key: int(part["leader"]) for key, part in self.describe(topics).items()}

    def active_controller(self) -> int | None:
        """The node that leads the KRaft quorum now (the active controller), as the running
        nodes' quorum-state files record it: the leader of the newest epoch, if it is running.
        None while an election is under way."""
        newest: tuple[int, int] | None = None  # (epoch, leader)
        for node in self.nodes:
            if not node.is_running():
                continue
            state = _read_json(node.data_dir / _QUORUM_STATE)
            epoch, leader = int(state.get("leaderEpoch", -1)), int(state.get("leaderId", -1))
            if leader >= 0 and (newest is None or epoch > newest[0]):
                newest = (epoch, leader)
        if newest is None or newest[1] not in self.running_nodes():
            return None
        return newest[1]

    def wait_healthy(self, timeout: float = 120.0, topics: list[str] | None = None) -> float:
        """Until every node is up and every partition (of ``topics``, default all) has a
        leader and all its replicas in sync: the cluster has healed. Returns the seconds."""
        started = time.monotonic()
        deadline = started + timeout
        self.wait_ready(timeout)
        lagging: dict[tuple[str, int], Any] = {}
        while time.monotonic() < deadline:
            try:
                described = self.describe(topics)
            except Exception as exc:  # a node restarting: ask again
                lagging = {("?", -1): repr(exc)}
            else:
                lagging = {
                    key: (part["leader"], part["replicas"], part["isr"])
                    for key, part in described.items()
                    if part["leader"] < 0 or sorted(part["isr"]) != sorted(part["replicas"])
                }
                if not lagging and self.active_controller() is not None:
                    return time.monotonic() - started
            time.sleep(0.5)
        raise BrokerError(
            f"cluster not healthy after {timeout:g} s: nodes up {self.running_nodes()}, "
            f"controller {self.active_controller()}, partitions (leader, replicas, isr) "
            f"not in sync: {dict(sorted(lagging.items())[:10])}"
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
