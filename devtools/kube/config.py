"""The cluster's layout on disk and the configuration files of its components.

One node, named after the host. Every server listens on 127.0.0.1 except the API server's
forwarder, which listens on the pods' gateway (the pods' own network). Addresses:

- pods: ``10.244.0.0/24`` on the bridge ``tskube0``, gateway ``10.244.0.1``;
- Services: ``10.96.0.0/16``; ``kubernetes`` is ``10.96.0.1``, cluster DNS ``10.96.0.10``.

Kubeconfigs and component configurations are written as JSON, which every Kubernetes decoder
reads like YAML.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DNS_IP", "GATEWAY", "POD_CIDR", "SERVICE_CIDR", "Layout", "Ports", "node_name"]

POD_CIDR = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
BRIDGE = "tskube0"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "tradestats.local/pause:1"
COREDNS_IMAGE = "tradestats.local/coredns:1"
HELPER_IMAGE = "tradestats.local/busybox:1"
#: The upstream name: it is Prometheus 3.10.0 itself, compiled here (without the web UI's
#: assets, which the module zip lacks).
PROMETHEUS_IMAGE = "prom/prometheus:v3.10.0"
PORT_NAMES = (
    "etcd",
    "etcd_peer",
    "apiserver",
    "controller_manager",
    "scheduler",
    "kubelet",
    "kubelet_healthz",
    "proxy_healthz",
    "proxy_metrics",
)


def node_name() -> str:
    return socket.gethostname().lower()


@dataclass(frozen=True)
class Ports:
    """Loopback ports, picked free at the first ``up`` and kept in the state file."""

    numbers: Mapping[str, int]

    def __getattr__(self, name: str) -> int:
        try:
            return self.numbers[name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def pick(cls, saved: Mapping[str, int]) -> Ports:
        numbers = dict(saved)
        for name in PORT_NAMES:
            if name not in numbers:
                numbers[name] = _free_port(set(numbers.values()))
        return cls(numbers)


def _free_port(avoid: set[int]) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in avoid:
            return port


class Layout:
    """Every path under the state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_file = root / "state.json"
        self.lock_file = root / "lock"
        self.pki = root / "pki"
        self.etcd = root / "etcd"
        self.logs = root / "logs"
        self.images = root / "images"
        self.containerd = root / "containerd"
        self.containerd_config = self.containerd / "config.toml"
        self.containerd_socket = self.containerd / "containerd.sock"
        self.cni_conf = root / "cni" / "net.d"
        self.cni_ipam = root / "cni" / "ipam"
        self.kubelet = root / "kubelet"
        self.kubelet_config = root / "kubelet.json"
        self.proxy_config = root / "kube-proxy.json"
        self.volumes = root / "volumes"

    def kubeconfig(self, user: str) -> Path:
        return self.root / "kubeconfig" / f"{user}.json"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def write_if_changed(path: Path, text: str) -> bool:
    """kube-proxy exits whenever its config file is rewritten, even with the same content."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str) -> str:
    return _json(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "tradestats",
                    "cluster": {"server": server, "certificate-authority": str(ca)},
                }
            ],
            "users": [
                {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
            ],
            "contexts": [
                {"name": "tradestats", "context": {"cluster": "tradestats", "user": user}}
            ],
            "current-context": "tradestats",
        }
    )


def kubelet_config(layout: Layout, ports: Ports, ca: Path) -> str:
    return _json(
        {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": ports.kubelet,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": ports.kubelet_healthz,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(ca)},
            },
            "authorization": {"mode": "Webhook"},
            # cgroup v1 on these machines; 1.34 is the last kubelet that still accepts it.
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
            "clusterDNS": [DNS_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "failSwapOn": False,
            # Images are imported, never pulled: garbage-collecting one would lose it for good.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # A shared disk: evict only when it is really full.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "2%",
                "imagefs.available": "2%",
            },
            "serializeImagePulls": False,
            "shutdownGracePeriod": "0s",
        }
    )


def proxy_config(layout: Layout, ports: Ports) -> str:
    return _json(
        {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(layout.kubeconfig("kube-proxy"))},
            "hostnameOverride": node_name(),
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
            "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
            # 0 = leave the host's conntrack sysctls alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            # NodePorts only on the pod network's gateway, never on the host's addresses, and
            # none on localhost (that would set net.ipv4.conf.all.route_localnet).
            "iptables": {"localhostNodePorts": False},
            "nodePortAddresses": [f"{GATEWAY}/32"],
        }
    )


def containerd_config(layout: Layout) -> str:
    root = layout.containerd
    return f"""\
# The cluster's own containerd: its own root, state and socket (not the Docker engine's).
version = 2
root = "{root / "root"}"
state = "{root / "state"}"

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{root / "containerd.ttrpc.sock"}"

[debug]
  address = "{root / "debug.sock"}"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # The VM has no CAP_SYS_RESOURCE: runc must not lower oom_score_adj below its own.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false
  # Pods' network namespaces under the state directory, not in /run/netns: there, anyone's
  # `ip netns add` bind-mounts the directory over itself and hides (and pins) ours.
  netns_mounts_under_state_dir = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{layout.cni_conf}"
"""


def cni_config(layout: Layout) -> str:
    return _json(
        {
            "cniVersion": "1.0.0",
            "name": "tradestats",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    # the route to Service addresses (and everything else) goes via the host
                    "isDefaultGateway": True,
                    "ipMasq": True,
                    # a pod reaching a Service that lands on itself (hairpin)
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                        "dataDir": str(layout.cni_ipam),
                    },
                },
                # dockerd sets the FORWARD policy to DROP: accept the pods' traffic explicitly.
                {"type": "firewall", "backend": "iptables"},
            ],
        }
    )


def _json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"
