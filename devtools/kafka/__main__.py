"""``python -m devtools.kafka {start,stop,kill,status,restart,env}``: the local dev Kafka.

One broker by default; ``start --nodes 3`` makes the state directory a cluster of three KRaft
nodes instead, which later commands on that directory find by themselves, and ``--node I``
acts on one node of it (``kill --node 2`` crashes node 2, ``start --node 2`` brings it back).
Brokers outlive this command; the state directory (default ``.local/kafka``) remembers their
pids and ports, so later commands find them.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from devtools.kafka.broker import (
    DEFAULT_TIMEOUT,
    KAFKA_VERSION,
    SASL_PLAINTEXT,
    SSL,
    BrokerError,
    LocalKafka,
)
from devtools.kafka.cluster import LocalKafkaCluster

COMMANDS = ["start", "stop", "kill", "status", "restart", "env"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.kafka",
        description=f"Run the project's local Apache Kafka {KAFKA_VERSION} (dev only).",
    )
    parser.add_argument("command", choices=COMMANDS, help="what to do")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".local/kafka"),
        help="state directory of the broker or cluster (default: .local/kafka)",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=None,
        help="start: a cluster of this many KRaft nodes (replication 3, min ISR 2)",
    )
    parser.add_argument("--node", type=int, default=None, help="act on this cluster node only")
    parser.add_argument("--port", type=int, default=None, help="PLAINTEXT port (default: free)")
    parser.add_argument("--sasl", action="store_true", help="add a SASL_PLAINTEXT listener")
    parser.add_argument("--tls", action="store_true", help="add SSL and SASL_SSL listeners")
    parser.add_argument("--heap", default="512m", help="JVM heap per node (default: 512m)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for readiness"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="devtools.kafka: %(message)s", stream=sys.stderr)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # probes while waiting are noisy
    try:
        if args.nodes is not None or LocalKafkaCluster.holds_cluster(args.state_dir):
            return _run_cluster(args)
        if args.node is not None:
            raise BrokerError(f"{args.state_dir} holds a single broker, not a cluster (--node)")
        kafka = LocalKafka(
            args.state_dir, port=args.port, sasl=args.sasl, tls=args.tls, heap=args.heap
        )
        return _run(args.command, kafka, args.timeout)
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(command: str, kafka: LocalKafka, timeout: float) -> int:
    if command in ("start", "restart"):
        # Keep the listeners this state directory had unless more are asked for.
        kafka.sasl = kafka.sasl or SASL_PLAINTEXT in kafka.listeners
        kafka.tls = kafka.tls or SSL in kafka.listeners
        if command == "start":
            kafka.start(timeout=timeout)
        else:
            kafka.restart(timeout=timeout)
        _describe(kafka)
    elif command in ("stop", "kill"):
        if command == "stop":
            kafka.stop()
        else:
            kafka.kill()
        print(f"stopped ({kafka.state_dir})")
    elif command == "status":
        if not kafka.is_running():
            print(f"not running ({kafka.state_dir})")
            return 1
        _describe(kafka)
    else:  # env
        if not kafka.is_running():
            print(f"error: no broker running in {kafka.state_dir}", file=sys.stderr)
            return 1
        _print_env(kafka.client_env())
    return 0


def _run_cluster(args: argparse.Namespace) -> int:
    if args.port or args.sasl or args.tls:
        raise BrokerError("a cluster has PLAINTEXT listeners on free ports only")
    if LocalKafkaCluster.holds_cluster(args.state_dir):
        cluster = LocalKafkaCluster.open(args.state_dir, heap=args.heap)
        if args.nodes is not None and args.nodes != cluster.size:
            raise BrokerError(f"{args.state_dir} holds a cluster of {cluster.size} nodes")
    elif args.command != "start" or args.node is not None:
        raise BrokerError(f"no cluster in {args.state_dir}: start one with --nodes N")
    elif (args.state_dir / "state.json").exists():
        raise BrokerError(f"{args.state_dir} holds a single broker: pick another --state-dir")
    else:
        cluster = LocalKafkaCluster(args.state_dir, size=args.nodes, heap=args.heap)
    node = args.node
    if args.command == "kill":
        if node is None:
            cluster.kill()
        else:
            cluster.kill_node(node)
    if args.command in ("stop", "restart"):
        if node is None:
            cluster.stop()
        else:
            cluster.stop_node(node)
    if args.command in ("start", "restart"):
        if node is None:
            cluster.start(timeout=args.timeout)
        else:
            cluster.start_node(node, timeout=args.timeout)
    if args.command == "env":
        if not cluster.running_nodes():
            print(f"error: no node running in {args.state_dir}", file=sys.stderr)
            return 1
        _print_env(cluster.client_env())
        return 0
    all_running = _describe_cluster(cluster)
    return 0 if all_running or args.command in ("stop", "kill") else 1


def _describe(kafka: LocalKafka) -> None:
    print(f"Kafka {KAFKA_VERSION} running, pid {kafka.pid}, state {kafka.state_dir}")
    for key, value in kafka.client_env().items():
        if "PASSWORD" not in key:
            print(f"  {key}={value}")
    print(f"  log: {kafka.log_file}")


def _describe_cluster(cluster: LocalKafkaCluster) -> bool:
    """Print each node's state; True when every node is running."""
    running = cluster.running_nodes()
    controller = cluster.active_controller()
    print(
        f"Kafka {KAFKA_VERSION} cluster of {cluster.size} nodes in {cluster.state_dir}: "
        f"{len(running)} running, active controller {controller}"
    )
    for node in cluster.nodes:
        state = f"running, pid {node.pid}" if node.node_id in running else "down"
        print(f"  node {node.node_id}: {state}, {node.bootstrap_servers}, log {node.log_file}")
    print(f"  KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap_servers}")
    return len(running) == cluster.size


def _print_env(env: dict[str, str]) -> None:
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")


if __name__ == "__main__":
    sys.exit(main())
