"""Fixtures of the cluster tests: the local Kubernetes cluster, the images, the deployed overlay.

The cluster is the project's own (``devtools.kube``): built once per machine (CI starts that
build in the background before anything else, and ``up`` waits for it), started for the session
unless it already runs, and stopped again if the session started it. If it cannot start, the
tests fail: they are never skipped.

Images come from the local Docker engine (``devtools.docker``): the worker image built from the
project's Dockerfile, and the stand-in for ``apache/kafka:4.1.2``, imported into the cluster's
containerd under their upstream names. Prometheus is the cluster's own build (with the
Kubernetes service discovery Debian's package lacks), imported by ``up``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.docker import DockerEngine, EngineError
from devtools.kube import BuildError, ClusterError, LocalCluster
from devtools.kube.workload import load_images
from tests.kube.stack import NAMESPACE, OVERLAY, Stack

#: Workers, Kafka and Prometheus Ready, claims Bound, topics created: the demo's first bound.
READY_WITHIN = 600.0

# The test's only change to the overlay: the broker's HOST listener is advertised at its pod
# IP, which the node (this machine) reaches directly, instead of localhost:9094 for a
# port-forward. The `test` op fails loudly if the overlay's env list ever moves.
_KAFKA_ADDRESS_PATCH = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {overlay}
patches:
  - target: {{group: apps, version: v1, kind: StatefulSet, name: kafka}}
    patch: |-
      - op: test
        path: /spec/template/spec/containers/0/env/4/name
        value: KAFKA_ADVERTISED_LISTENERS
      - op: replace
        path: /spec/template/spec/containers/0/env/4/value
        value: PLAINTEXT://kafka:9092,HOST://$(POD_IP):9094
      - op: add
        path: /spec/template/spec/containers/0/env/0
        value: {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
"""
# A test module's own worker settings (its SETTINGS), merged into the overlay's ConfigMap.
_SETTINGS = """\
configMapGenerator:
  - name: tradestats-config
    namespace: tradestats
    behavior: merge
    literals: {literals}
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kube: needs the local Kubernetes cluster (started by the session fixture)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The cluster tests last: on a fresh machine the cluster's build, started in the
    background by .ci/run, is still compiling while the rest of the suite runs."""
    here = Path(__file__).parent
    items.sort(key=lambda item: here in Path(item.path).parents)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    was_up = cluster.is_up()
    started = time.monotonic()
    try:
        cluster.up(timeout=float(os.environ.get("TRADESTATS_KUBE_UP_TIMEOUT", "3600")))
    except (BuildError, ClusterError) as exc:
        if not was_up:
            cluster.down()  # whatever did start
        pytest.fail(f"the local Kubernetes cluster did not start: {exc}", pytrace=False)
    print(f"cluster {'adopted' if was_up else 'up'} in {time.monotonic() - started:.0f} s")
    try:
        yield cluster
    finally:
        if not was_up:
            cluster.down()


@pytest.fixture(scope="session")
def images(cluster: LocalCluster) -> Iterator[list[str]]:
    """The worker image and Kafka, built by the Docker engine and imported into the cluster."""
    engine = DockerEngine()
    try:
        engine.start()
        names = load_images(cluster, engine)
    except (EngineError, ClusterError) as exc:
        pytest.fail(f"the images could not be built or imported: {exc}", pytrace=False)
    try:
        yield names
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest,
    cluster: LocalCluster,
    images: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The overlay applied on a fresh namespace (a previous run's data deleted first), with the
    test module's ``SETTINGS`` if it has any; at the end the namespace's state is printed
    (pytest shows it for failed tests) and deleted."""
    stack = Stack(cluster)
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=300s")
    layer = tmp_path_factory.mktemp("kustomization")
    kustomization = _KAFKA_ADDRESS_PATCH.format(overlay=os.path.relpath(OVERLAY, layer))
    settings = getattr(request.module, "SETTINGS", {})
    if settings:
        literals = json.dumps([f"{name}={value}" for name, value in settings.items()])
        kustomization += _SETTINGS.format(literals=literals)
    (layer / "kustomization.yaml").write_text(kustomization)
    stack.applied_at = time.monotonic()
    print(cluster.kubectl("apply", "--kustomize", str(layer)))
    try:
        yield stack
    finally:
        print(stack.describe())
        cluster.kubectl("delete", "namespace", NAMESPACE, "--timeout=300s", check=False)
