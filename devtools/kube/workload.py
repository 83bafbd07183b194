"""The images k8s/overlays/single-node runs, from the local Docker engine into the cluster.

The worker image is built from the project's Dockerfile (``tradestats:<version>``, the tag
k8s/base names); Kafka is the Docker tooling's stand-in for ``apache/kafka:4.1.2``, given its
upstream name inside the cluster's containerd only. Prometheus is the cluster's own build (see
:mod:`devtools.kube.build`), imported by ``up``. Nothing is pulled.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from pathlib import Path

from devtools.docker import (
    KAFKA_IMAGE,
    DockerEngine,
    build_project_image,
    ensure_standins,
    save_image,
)
from devtools.kube.cluster import LocalCluster

__all__ = ["load_images", "worker_image"]


def worker_image() -> str:
    return f"tradestats:{importlib.metadata.version('tradestats')}"


def load_images(cluster: LocalCluster, engine: DockerEngine) -> list[str]:
    """Build what is missing in the engine and import it into the cluster; returns the names
    the pods use."""
    upstream_of = {local: upstream for upstream, local in ensure_standins(engine).items()}
    worker = build_project_image(engine, worker_image())
    with tempfile.TemporaryDirectory(prefix="tradestats-images-") as scratch:
        for ref in (worker, KAFKA_IMAGE):
            archive = Path(scratch) / (ref.replace("/", "_").replace(":", "_") + ".tar")
            cluster.import_images(save_image(engine, ref, archive))
    cluster.tag_image(KAFKA_IMAGE, upstream_of[KAFKA_IMAGE])
    return [worker, upstream_of[KAFKA_IMAGE]]
