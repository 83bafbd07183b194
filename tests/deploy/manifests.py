"""Rendered Kubernetes manifests: lookup helpers over the documents ``kubectl kustomize`` prints."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CRD_KINDS",
    "VARIANTS",
    "WORKLOAD_KINDS",
    "Rendered",
]

#: Every kustomization CI renders: the base and each overlay.
VARIANTS = {
    "base": "k8s/base",
    "ephemeral": "k8s/overlays/ephemeral",
    "keda": "k8s/overlays/keda",
    "prometheus-operator": "k8s/overlays/prometheus-operator",
    "strimzi": "k8s/overlays/strimzi",
    "single-node": "k8s/overlays/single-node",
}
WORKLOAD_KINDS = ("StatefulSet", "Deployment")
#: Custom resources: no schema offline, their shape is asserted by the tests instead.
CRD_KINDS = ("ServiceMonitor", "PrometheusRule", "ScaledObject", "KafkaTopic")

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """One variant's rendered output: the file (for the CLI validators) and its documents."""

    variant: str
    path: Path
    docs: list[Manifest]

    def of_kind(self, kind: str) -> list[Manifest]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Manifest:
        found = [d for d in self.of_kind(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.variant}: expected one {kind} {name or ''}, got {found}"
        return found[0]

    def workload(self) -> Manifest:
        """The workers (an overlay may add other workloads, e.g. Kafka and Prometheus)."""
        found = [
            doc
            for doc in self.docs
            if doc["kind"] in WORKLOAD_KINDS
            and doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "worker"
        ]
        assert len(found) == 1, f"{self.variant}: expected one workload, got {len(found)}"
        return found[0]

    def core_docs(self) -> list[Manifest]:
        return [doc for doc in self.docs if doc["kind"] not in CRD_KINDS]

    def config(self) -> dict[str, str]:
        """The data of the settings ConfigMap the workload reads (envFrom)."""
        names = {
            source["configMapRef"]["name"]
            for container in containers(self.workload())
            for source in container.get("envFrom", [])
            if "configMapRef" in source
        }
        assert len(names) == 1, f"{self.variant}: expected one envFrom ConfigMap, got {names}"
        data: dict[str, str] = self.one("ConfigMap", names.pop())["data"]
        return data

    def setting(self, name: str, container: Manifest | None = None) -> str | None:
        """A setting's value as the worker container sees it (env over envFrom)."""
        container = container or containers(self.workload())[0]
        for entry in container.get("env", []):
            if entry["name"] == name:
                return str(entry.get("value"))
        return self.config().get(name)


def pod_spec(workload: Manifest) -> Manifest:
    spec: Manifest = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Manifest) -> list[Manifest]:
    found: list[Manifest] = pod_spec(workload)["containers"]
    return found


def all_containers(workload: Manifest) -> Iterator[Manifest]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def env_references(value: str) -> set[str]:
    """Names referenced as $(NAME) in a Kubernetes env value ($$ escapes)."""
    return set(re.findall(r"(?<!\$)\$\((\w+)\)", value))
