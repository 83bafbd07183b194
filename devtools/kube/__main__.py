"""``python -m devtools.kube {build,up,down,status,kubectl}``: the local Kubernetes cluster.

``build`` compiles (or finds cached) every program; ``up`` builds if needed and starts the
cluster; ``down`` stops it (``--purge`` also forgets its data); ``status`` shows each part;
``kubectl ARGS...`` runs the cluster's kubectl with the admin kubeconfig. Needs root.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from devtools.kube.build import KUBERNETES_VERSION, ensure_built
from devtools.kube.cluster import LocalCluster, default_state_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.kube",
        description=f"A local single-node Kubernetes {KUBERNETES_VERSION} cluster (dev only).",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=None, help=f"default: {default_state_dir()}"
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="build cache directory")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="compile every program (cached)")
    up = commands.add_parser("up", help="build if needed, start the cluster, wait until ready")
    up.add_argument("--timeout", type=float, default=900.0, help="seconds to wait")
    down = commands.add_parser("down", help="delete the pods, stop everything, restore the host")
    down.add_argument("--purge", action="store_true", help="also remove the cluster's data")
    commands.add_parser("status", help="each component, the host's settings, nodes and pods")
    commands.add_parser(
        "load-images",
        help="build the worker image and the Kafka stand-in (Docker engine), import them",
    )
    commands.add_parser("kubectl", help="the cluster's kubectl, as admin: kubectl ARGS...")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # kubectl's arguments go through untouched (argparse would take its options for ours)
    split = argv.index("kubectl") + 1 if "kubectl" in argv else len(argv)
    args = _parser().parse_args(argv[:split])
    args.args = argv[split:]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s devtools.kube: %(message)s", stream=sys.stderr
    )
    cluster = LocalCluster(args.state_dir, args.cache_dir)
    started = time.monotonic()
    try:
        if args.command == "build":
            ensure_built(args.cache_dir)
        elif args.command == "up":
            cluster.up(timeout=args.timeout)
            print(f"export KUBECONFIG={cluster.kubeconfig}")
            print(f"alias kubectl={cluster.kubectl_path}")
        elif args.command == "down":
            cluster.down(purge=args.purge)
        elif args.command == "load-images":
            _load_images(cluster)
        elif args.command == "kubectl":
            print(cluster.kubectl(*args.args), end="")
        else:
            return _status(cluster)
    except RuntimeError as exc:  # BuildError, ClusterError, the Docker engine's EngineError
        print(f"error: {exc}", file=sys.stderr)
        if args.command == "up":
            print("what did start keeps running: `python -m devtools.kube down`", file=sys.stderr)
        return 1
    if args.command in ("build", "up", "down"):
        print(f"{args.command} took {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


def _load_images(cluster: LocalCluster) -> None:
    from devtools.docker import DockerEngine
    from devtools.kube.workload import load_images

    with DockerEngine() as engine:
        print("imported", ", ".join(load_images(cluster, engine)))


def _status(cluster: LocalCluster) -> int:
    running = cluster.running()
    for name, alive in running.items():
        print(f"{name:26} {'running' if alive else 'stopped'}")
    if not any(running.values()):
        return 1
    drift = cluster.host_settings_drift()
    for name, (saved, now) in sorted(drift.items()):
        print(f"warning: kernel setting {name} is {now}, the host had {saved}")
    if running["kube-apiserver"]:
        print(cluster.kubectl("get", "nodes,pods", "--all-namespaces", "-o", "wide", check=False))
    return 0 if all(running.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
