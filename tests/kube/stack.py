"""The single-node overlay deployed on the local cluster, seen from the test: pods, HTTP, Kafka.

The host is the cluster's node, so the test reaches pods at their IPs and Services at their
ClusterIPs (kube-proxy's rules apply to the host's own traffic too) without port-forwards. The
in-cluster Kafka advertises its HOST listener at the broker pod's IP for that reason (see
``deploy`` in conftest.py); everything else is the overlay as it ships.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.kube import LocalCluster
from tests.integration.harness import Topics

__all__ = ["NAMESPACE", "OVERLAY", "Restart", "Stack", "base_topics", "http_get", "is_ready"]

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "k8s" / "overlays" / "single-node"
NAMESPACE = "tradestats"
WORKERS = "app.kubernetes.io/name=tradestats,app.kubernetes.io/component=worker"
WEB_PORT = 6066
KAFKA_HOST_PORT = 9094
RESTORED = 'tradestats_changelog_records_restored_total{role="active"}'


def base_topics() -> Topics:
    """The topic names every worker of k8s/base uses (its config.env)."""
    settings = dict(
        line.split("=", 1)
        for line in (REPO / "k8s" / "base" / "config.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    return Topics(
        settings["APP_ID"], settings["TRADES_TOPIC"], settings["STATS_TOPIC"], settings["DLQ_TOPIC"]
    )


@dataclass(frozen=True)
class Restart:
    """A worker pod replaced: seconds from the delete to Ready, changelog records it restored
    (its own counter), and whether it kept its claim."""

    seconds: float
    restored: float
    claim_kept: bool


@dataclass
class Stack:
    """kubectl, HTTP and Kafka addresses of the deployed overlay."""

    cluster: LocalCluster
    applied_at: float = 0.0
    """time.monotonic() when the overlay was applied."""

    # --- the API ---------------------------------------------------------------------------

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        return self.cluster.kubectl("--namespace", NAMESPACE, *args, check=check, input=input)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "--output", "json"))

    def pod(self, name: str) -> dict[str, Any] | None:
        found = self.get("pods", f"--field-selector=metadata.name={name}")["items"]
        return found[0] if found else None

    def workers(self) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = self.get("pods", "--selector", WORKERS)["items"]
        return sorted(pods, key=lambda pod: pod["metadata"]["name"])

    def pod_ip(self, name: str) -> str:
        pod = self.pod(name)
        ip = pod["status"].get("podIP") if pod else None
        assert ip, f"{name} has no IP"
        return str(ip)

    def service_ip(self, name: str) -> str:
        return str(self.get("service", name)["spec"]["clusterIP"])

    @property
    def kafka(self) -> str:
        """Bootstrap address of the in-cluster broker for clients on the host."""
        return f"{self.pod_ip('kafka-0')}:{KAFKA_HOST_PORT}"

    # --- HTTP ------------------------------------------------------------------------------

    def worker(self, name: str, path: str) -> tuple[int, Any]:
        return http_get(f"http://{self.pod_ip(name)}:{WEB_PORT}{path}")

    def through_service(self, path: str) -> tuple[int, Any]:
        """GET on the ``tradestats`` Service: kube-proxy picks a ready worker."""
        return http_get(f"http://{self.service_ip('tradestats')}:{WEB_PORT}{path}")

    def metric(self, series: str, pods: list[str] | None = None) -> float:
        """A series of the workers' /metrics, summed over ``pods`` (default: every worker)."""
        total = 0.0
        for name in pods or [pod["metadata"]["name"] for pod in self.workers()]:
            status, text = self.worker(name, "/metrics")
            assert status == 200, f"{name} /metrics: {status} {text}"
            for line in str(text).splitlines():
                if line.startswith(series + " "):
                    total += float(line.rpartition(" ")[2])
        return total

    def assignment(self) -> dict[str, list[int]]:
        """Active partitions of every worker whose /ready answers 200."""
        assigned = {}
        for pod in self.workers():
            name, ip = pod["metadata"]["name"], pod["status"].get("podIP")
            if not ip:
                continue
            try:
                status, body = http_get(f"http://{ip}:{WEB_PORT}/ready", timeout=2)
            except OSError:
                continue
            if status == 200:
                assigned[name] = list(body["partitions"])
        return assigned

    def wait_settled(self, replicas: int, partitions: int, timeout: float = 600) -> float:
        """Until ``replicas`` workers are Ready and own every partition exactly once."""

        def settled() -> bool:
            pods = self.workers()
            assigned = self.assignment()
            owned = sorted(p for parts in assigned.values() for p in parts)
            return (
                len(pods) == replicas
                and all(is_ready(pod) for pod in pods)
                and len(assigned) == replicas
                and owned == list(range(partitions))
            )

        return self.wait(f"{replicas} workers owning {partitions} partitions", settled, timeout)

    def replace_pod(self, pod: str, *, claim_too: bool, timeout: float) -> Restart:
        """Delete a worker pod (and its claim) and wait for the StatefulSet's replacement to be
        Ready; measured from the delete, graceful shutdown included."""
        before = self.pod(pod)
        assert before is not None, f"no pod {pod}"
        claim = f"data-{pod}"
        claim_before = self.get("pvc", claim)["metadata"]["uid"]
        started = time.monotonic()
        if claim_too:
            self.kubectl("delete", "pvc", claim, "--wait=false")
        self.kubectl("delete", "pod", pod, "--wait=false")

        def back() -> bool:
            now = self.pod(pod)
            replaced = now is not None and now["metadata"]["uid"] != before["metadata"]["uid"]
            return replaced and is_ready(now)

        self.wait(f"{pod} back and Ready", back, timeout)
        seconds = time.monotonic() - started
        claim_after = self.get("pvc", claim)
        assert claim_after["status"]["phase"] == "Bound", claim_after["status"]
        return Restart(
            seconds=seconds,
            restored=self.metric(RESTORED, [pod]),
            claim_kept=claim_after["metadata"]["uid"] == claim_before,
        )

    # --- Prometheus ------------------------------------------------------------------------

    def prometheus(self, path: str, **params: str) -> Any:
        """The ``data`` of a Prometheus HTTP API answer, e.g. ``prometheus("query", query=...)``."""
        url = f"http://{self.service_ip('prometheus')}:9090/api/v1/{path}"
        status, body = http_get(f"{url}?{urllib.parse.urlencode(params)}")
        assert status == 200, (status, body)
        assert body["status"] == "success", body
        return body["data"]

    # --- waiting and telling ---------------------------------------------------------------

    def wait(self, what: str, condition: Callable[[], bool], timeout: float) -> float:
        """Seconds until ``condition()``; fails with the namespace's state after ``timeout``."""
        started = time.monotonic()
        while not condition():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"not {what} after {timeout:.0f} s:\n{self.describe()}")
            time.sleep(0.5)
        return time.monotonic() - started

    def describe(self) -> str:
        """Pods, claims, recent events and the end of every worker's log, for failures."""
        parts = [
            self.kubectl("get", "pods,pvc,jobs", "--output", "wide", check=False),
            self.kubectl("get", "events", "--sort-by=.lastTimestamp", check=False)[-6000:],
        ]
        for pod in self.workers():
            name = pod["metadata"]["name"]
            parts.append(f"----- {name}:\n" + self.log_tail(name))
        return "\n".join(parts)

    def log_tail(self, pod: str, lines: int = 40, previous: bool = False) -> str:
        args = ["logs", pod, f"--tail={lines}"] + (["--previous"] if previous else [])
        return self.kubectl(*args, check=False)


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions", [])
    deleting = pod["metadata"].get("deletionTimestamp") is not None
    return not deleting and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """(status, parsed JSON or text) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()
